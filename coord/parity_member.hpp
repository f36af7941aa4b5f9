// One VMM's part in a diskless cluster's parity (issue 12), beside
// ClusterMember, which calls it.
//
// As a member of a parity set, after its VM's checkpoint of epoch E: the
// changes of its protected image (ckpt/protected_image.hpp) since the base
// epoch (old XOR new of each changed page; the whole image when there is
// none) go to each of its set's holders as PARITY_BEGIN, PARITY..., then
// PARITY_END, on its own connection to each.
//
// As a holder (the first VM in file order on a parity node), on the network
// thread: each block it keeps folds in its members' changes, and is finished
// (checksummed, sealed) once every member's END arrived. Its DONE waits for
// that and reports the blocks, so an epoch commits only with all its parity.
// A member lost before its END fails the block, and so the epoch.
//
// After a commit the member's base and the holder's blocks keep the new
// epoch and the previous committed one (as the node keeps checkpoints).
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/parity_codec.hpp"
#include "ckpt/parity_store.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/parity_roles.hpp"
#include "net/peer_mesh.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::coord {

// What a member sent for one epoch: the EpochVm fields of its DONE.
struct MemberParity {
    uint64_t image_bytes = 0;
    uint64_t memory_bytes = 0;
    uint64_t memory_hashes_xxh3 = 0;
    uint64_t parity_bytes = 0;  // bytes of changes, to each holder
};

class ParityMember {
public:
    using Clock = std::chrono::steady_clock;

    ParityMember(const ClusterConfig& config, std::string vm, std::string node_root, net::PeerMesh& mesh,
                 ckpt::SealKey key);

    bool is_member() const { return membership_.has_value(); }
    bool holds_blocks() const { return !held_.empty(); }

    // Member, on the epoch thread: sends the changes of checkpoint
    // `checkpoint_dir` since committed epoch `base` (0: the whole image).
    Result<MemberParity> send_changes(uint64_t epoch, uint64_t base, const std::string& checkpoint_dir,
                                      Clock::time_point deadline);

    // Holder, on the network thread.
    void on_begin(const std::string& peer, uint64_t epoch, const nlohmann::json& body);
    void on_parity(const std::string& peer, const net::ParityMessage& message);
    void on_end(const std::string& peer, uint64_t epoch, const nlohmann::json& body);
    void on_peer_lost(const std::string& peer);
    // Holder, on the epoch thread: the blocks it keeps, finished for `epoch`.
    Result<std::vector<EpochParityBlock>> wait_held(uint64_t epoch, Clock::time_point deadline);

    void committed(uint64_t epoch);
    void aborted(uint64_t epoch);

private:
    struct Base {
        std::string checkpoint_dir;
        std::vector<uint64_t> memory_hashes;
    };
    struct Held {
        HeldBlock block;
        std::unique_ptr<ckpt::ParityCodec> codec;
        std::unique_ptr<ckpt::ParityBlockStore> store;
        uint64_t epoch = 0;  // being built or finished; 0: none
        uint64_t base = 0;
        std::vector<bool> begun, ended;
        std::optional<EpochParityBlock> finished;
        std::string error;
        std::vector<uint64_t> committed;  // the newest two, oldest first
    };

    Held* held_for(const std::string& peer, uint32_t set, unsigned member, uint64_t epoch, const char* what);
    void fail(Held& h, const std::string& why);  // mutex_ held
    void finish_if_complete(Held& h);            // mutex_ held
    void send_to_holders(net::MessageType type, uint64_t epoch, const nlohmann::json& body);

    const ClusterConfig& config_;
    const std::string vm_;
    const std::string node_root_;
    net::PeerMesh& mesh_;
    const ckpt::SealKey key_;
    const std::optional<ParityMembership> membership_;

    RateLimitedLog log_;  // dropped messages from peers

    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<uint64_t, Base> bases_;  // member: this VM's images of recent epochs
    std::vector<uint64_t> committed_;  // member: committed epochs with parity, the newest two
    std::map<uint32_t, Held> held_;   // holder: by set
    uint64_t newest_aborted_ = 0;     // holder: an epoch waited for is off, begun here or not
};

}  // namespace vvmm::coord
