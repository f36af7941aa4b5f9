// One VMM's part in its cluster: the coordinated checkpoint of epochs
// (DESIGN.md, "Coordinated checkpoint of a cluster"; wire format and
// sequence diagram in net/peer_protocol.hpp) and the restore barrier.
//
// Any VMM initiates an epoch when a controller (`vvmm checkpoint --all`)
// asks it: it sends PREPARE(E) to every peer and checkpoints its own VM. A
// VMM that gets PREPARE(E) checkpoints its VM with the network cut taken at
// the state capture (ckpt::EpochCut), waits for its channel state, and
// answers DONE(E) with the checkpoint's id and digest. When every VM is
// done, the initiator writes the cluster manifest and sends COMMIT(E) with
// it; every VMM writes it too. Any failure, a lost peer or the deadline
// makes the initiator send ABORT(E): the VMs never stopped running, and E
// is not a committed epoch (its VM checkpoints stay as plain checkpoints).
//
// One epoch at a time: a PREPARE while another epoch runs is answered with
// a failed DONE, and a controller request with "busy".
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "ckpt/checkpointer.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_request.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/epoch_initiator.hpp"
#include "coord/epoch_schedule.hpp"
#include "coord/parity_member.hpp"
#include "coord/rebuild_exchange.hpp"
#include "net/peer_mesh.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::coord {

class ClusterMember final : public net::PeerMessageSink, public net::ControllerRequestHandler {
public:
    // `status` answers a controller's "status" for this VM. `restore_epoch`:
    // the epoch this VM is being restored from (0: it booted); peers'
    // RESTORED messages count only for that one, and only until the barrier.
    // `seal_key` seals the cluster manifests it writes (the cluster's key).
    ClusterMember(const ClusterConfig& config, std::string vm, net::PeerMesh& mesh, ckpt::Checkpointer& checkpointer,
                  ckpt::SealKey seal_key, std::function<nlohmann::json()> status, uint64_t restore_epoch = 0);
    ~ClusterMember() override;

    // Restore barrier: tells every peer this VM is restored from `epoch` and
    // waits until every peer said the same (or `stop` returns true). With a
    // rebuild duty, this VM first sends its part of the lost VMs' rebuild.
    Result<void> wait_restored(uint64_t epoch, const std::function<bool()>& stop);
    void set_rebuild_duty(RebuildContext context) { rebuild_ = std::move(context); }

    void on_control(const std::string& peer, net::MessageType type, uint64_t epoch,
                    const nlohmann::json& body) override;
    void on_peer_lost(const std::string& peer) override;
    void on_parity(const std::string& peer, const net::ParityMessage& message) override;
    void on_request(const nlohmann::json& request, std::function<void(nlohmann::json)> reply) override;

private:
    using Clock = std::chrono::steady_clock;
    struct Epoch {
        uint64_t number = 0;
        std::string initiator;
        ckpt::CheckpointMode mode = ckpt::CheckpointMode::stop;
        bool incremental = false;
        uint64_t parity_base = 0;  // PREPARE's: what this epoch's parity changes are against
        Clock::time_point started, deadline;
        std::optional<EpochInitiator> tally;                // this VMM initiated it
        std::function<void(nlohmann::json)> reply;          // the controller's, at the initiator
        bool decided = false;                               // COMMIT or ABORT seen / sent
    };

    void start_epoch(const ClusterRequest& request, std::function<void(nlohmann::json)> reply);
    void on_prepare(const std::string& peer, uint64_t epoch, const nlohmann::json& body);
    Result<void> begin(Epoch e);  // mutex_ held
    void run_epoch(uint64_t number);  // the epoch thread
    nlohmann::json local_checkpoint(const Epoch& e);
    // Diskless parity: sends this VM's changes, and (a holder) waits for its
    // blocks; adds what it did to `done`, or turns it into a failure.
    void protect(const Epoch& e, nlohmann::json& done);
    // An epoch's outcome, for the parity. mutex_ held.
    void parity_outcome(uint64_t epoch, const ClusterManifest* committed);
    void on_done(const std::string& vm, uint64_t epoch, const nlohmann::json& body);
    // Initiator: acts on a decided tally. mutex_ held.
    void finish_if_decided(std::unique_lock<std::mutex>& lock);
    // Ends the mesh's part of an aborted epoch: never with mutex_ held, since
    // it waits for the network thread, whose handlers take mutex_.
    void abort_cut(std::unique_lock<std::mutex>& lock, uint64_t epoch);
    // Only from the epoch's initiator (EpochAuthority); others are dropped.
    void on_commit(const std::string& peer, uint64_t epoch, const nlohmann::json& body);
    void on_abort(const std::string& peer, uint64_t epoch, const std::string& reason);
    // storage = memory: once `epoch` committed, only its checkpoint and the
    // previous committed epoch's (with their chains) and their cluster
    // manifests stay on this node's tmpfs.
    void keep_only_committed(uint64_t epoch, const std::string& id);
    void drop(const std::string& peer, net::MessageType type, uint64_t epoch, const std::string& why);
    nlohmann::json list() const;
    std::vector<std::string> peers() const;

    const ClusterConfig& config_;
    const std::string vm_;
    const std::string node_;
    const std::string node_root_;  // this node's checkpoints and committed epochs
    const std::string vm_root_;    // this VM's checkpoint directory
    net::PeerMesh& mesh_;
    ckpt::Checkpointer& checkpointer_;
    const ckpt::SealKey seal_key_;
    std::function<nlohmann::json()> status_;

    mutable std::mutex mutex_;
    std::condition_variable cv_;
    EpochAuthority authority_;  // epoch numbers seen, and who may decide which
    RateLimitedLog peer_log_;   // refused and dropped epoch messages
    std::optional<Epoch> epoch_;
    uint64_t last_committed_ = 0;  // the newest epoch this VMM saw commit
    std::unique_ptr<ParityMember> parity_;  // storage = memory with redundancy
    // The base of the next epoch's parity: the last epoch, if it committed
    // with parity; after an abort or a restart, 0 (everything is encoded again).
    uint64_t parity_base_ = 0;
    std::thread epoch_thread_;
    bool epoch_thread_busy_ = false;
    bool quit_ = false;
    std::set<std::string> restored_;  // peers that sent RESTORED(restore_epoch_)
    std::string restore_conflict_;    // a peer that restores another epoch

    // persist_every: committed epochs copied to persist_dir off the epoch
    // thread; while a copy runs, older checkpoints stay in memory.
    void persist_worker();
    void persist(uint64_t epoch, const std::string& id);
    std::mutex persist_mutex_;
    std::condition_variable persist_cv_;
    std::optional<std::pair<uint64_t, std::string>> persist_next_;  // (epoch, this VM's checkpoint id)
    bool persist_quit_ = false;
    std::atomic<bool> persisting_{false};
    std::thread persist_thread_;

    // Scheduled epochs (cfg.toml `interval`): a thread that looks once a
    // second; only the first live VM in file order starts them.
    void schedule_worker();
    void record_epoch_end(const ClusterManifest* committed);  // mutex_ held
    nlohmann::json schedule_status() const;                    // mutex_ held
    std::thread schedule_thread_;
    Clock::time_point last_epoch_end_;  // the last commit or abort seen, or the start
    std::vector<Seconds> epoch_costs_;  // committed epochs' epoch_ms, newest last (kEpochCostWindow)

    // `list` reads epoch manifests from disk: answered on a thread of its own,
    // never on the network thread (one waiting reply per controller at most:
    // the mesh lets a controller have one request in flight).
    void list_worker();
    std::mutex list_mutex_;
    std::condition_variable list_cv_;
    std::deque<std::function<void(nlohmann::json)>> list_replies_;
    bool list_quit_ = false;
    std::thread list_thread_;
    uint64_t restore_epoch_ = 0;
    bool restore_done_ = false;
    std::optional<RebuildContext> rebuild_;  // restore --lost: what this VM sends to rebuild lost VMs
};

}  // namespace vvmm::coord
