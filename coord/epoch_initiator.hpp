// The initiator's side of a cluster epoch, as plain bookkeeping: which VMs
// have answered DONE, and whether the epoch commits or aborts. No I/O; the
// cluster member feeds it events and acts on the outcome.
//   commit: every VM (the initiator's own included) answered DONE ok;
//   abort:  a VM answered DONE with an error, a VM's connection was lost
//           before its DONE, or the deadline passed.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coord/cluster_manifest.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::coord {

class EpochInitiator {
public:
    enum class Outcome { pending, commit, abort };

    EpochInitiator(uint64_t epoch, std::vector<std::string> vms) : epoch_(epoch), vms_(std::move(vms)) {}

    uint64_t epoch() const { return epoch_; }
    // A DONE body: {"ok":true, "vm", "node", "id", "manifest_xxh3", "bytes",
    // "pause_ms", "total_ms", "incremental"} (with diskless parity also
    // "image_bytes", "memory_hashes_xxh3", "parity_bytes", and from a holder
    // "parity": the blocks it finished) or {"ok":false, "error"}.
    Outcome on_done(const std::string& vm, const nlohmann::json& body);
    Outcome on_vm_lost(const std::string& vm);
    Outcome on_deadline();
    Outcome outcome() const { return outcome_; }
    const std::string& abort_reason() const { return reason_; }
    // The VMs that have not answered yet.
    std::vector<std::string> waiting_for() const;
    // Valid once committed: the epoch's VMs in configuration order.
    const std::vector<EpochVm>& results() const { return ordered_; }
    // The parity blocks the holders' DONEs reported, in arrival order.
    const std::vector<EpochParityBlock>& parity_blocks() const { return parity_; }

private:
    Outcome abort(std::string reason);

    uint64_t epoch_;
    std::vector<std::string> vms_;
    std::map<std::string, EpochVm> done_;
    std::vector<EpochVm> ordered_;
    std::vector<EpochParityBlock> parity_;
    Outcome outcome_ = Outcome::pending;
    std::string reason_;
};

// Which epoch messages a VMM believes (DESIGN.md, "Trust"). Peers are
// authenticated, but a buggy or compromised one must not decide an epoch
// it did not start, nor push the epoch numbers out of reach. Plain
// bookkeeping, like EpochInitiator; the cluster member asks it first.
//  - A PREPARE's epoch must be newer than every epoch this VMM has seen and
//    at most net::kMaxEpochStep past it.
//  - COMMIT and ABORT of epoch E count only from E's initiator: the peer
//    whose PREPARE(E) passed here, and once. If this VMM initiated E, no
//    peer's COMMIT or ABORT of E counts.
class EpochAuthority {
public:
    EpochAuthority(std::string self, uint64_t newest_known) : self_(std::move(self)), last_(newest_known) {}

    // The newest epoch seen: committed, prepared, aborted or restored.
    uint64_t last_epoch() const { return last_; }
    // The number for an epoch this VMM starts (then call started()).
    Result<uint64_t> next_epoch() const;
    void started(uint64_t epoch);
    Result<void> on_prepare(const std::string& peer, uint64_t epoch);
    // The PREPARE of `epoch` began it here: it is remembered for as long as
    // no other epoch runs, however many refused PREPAREs come meanwhile.
    void running(uint64_t epoch) { running_ = epoch; }
    Result<void> on_decision(const std::string& peer, uint64_t epoch);
    // A restore from `epoch` (the user chose it, from this node's own files).
    void restored(uint64_t epoch);

private:
    struct Prepared {
        uint64_t epoch;
        std::string initiator;
        bool decided = false;
    };
    void remember(uint64_t epoch, const std::string& initiator);

    // A few recent epochs: the running one, and PREPAREs refused while it
    // ran (their ABORT still counts, so their late markers are stale).
    static constexpr size_t kRemembered = 8;
    std::string self_;
    uint64_t last_;
    uint64_t running_ = 0;
    std::deque<Prepared> recent_;  // oldest first
};

}  // namespace vvmm::coord
