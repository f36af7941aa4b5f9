// The initiator's side of a cluster epoch, as plain bookkeeping: which VMs
// have answered DONE, and whether the epoch commits or aborts. No I/O; the
// cluster member feeds it events and acts on the outcome.
//   commit: every VM (the initiator's own included) answered DONE ok;
//   abort:  a VM answered DONE with an error, a VM's connection was lost
//           before its DONE, or the deadline passed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coord/cluster_manifest.hpp"

namespace vvmm::coord {

class EpochInitiator {
public:
    enum class Outcome { pending, commit, abort };

    EpochInitiator(uint64_t epoch, std::vector<std::string> vms) : epoch_(epoch), vms_(std::move(vms)) {}

    uint64_t epoch() const { return epoch_; }
    // A DONE body: {"ok":true, "vm", "node", "id", "manifest_xxh3", "bytes",
    // "pause_ms", "total_ms", "incremental"} or {"ok":false, "error"}.
    Outcome on_done(const std::string& vm, const nlohmann::json& body);
    Outcome on_vm_lost(const std::string& vm);
    Outcome on_deadline();
    Outcome outcome() const { return outcome_; }
    const std::string& abort_reason() const { return reason_; }
    // The VMs that have not answered yet.
    std::vector<std::string> waiting_for() const;
    // Valid once committed: the epoch's VMs in configuration order.
    const std::vector<EpochVm>& results() const { return ordered_; }

private:
    Outcome abort(std::string reason);

    uint64_t epoch_;
    std::vector<std::string> vms_;
    std::map<std::string, EpochVm> done_;
    std::vector<EpochVm> ordered_;
    Outcome outcome_ = Outcome::pending;
    std::string reason_;
};

}  // namespace vvmm::coord
