// One VM in this process, from creation to exit: the machine, its board,
// the checkpointer and (with --api) the control server. Built either by
// booting a kernel (vm_boot.cpp) or by restoring a checkpoint
// (vm_restore.cpp); both end in run(). The composition root: the CLI only
// parses flags into a request and prints how the VM ended.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/checkpoint_loader.hpp"
#include "ckpt/checkpointer.hpp"
#include "ckpt/lazy_memory.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_member.hpp"
#include "control/control_server.hpp"
#include "net/peer_mesh.hpp"
#include "devices/pc_board.hpp"
#include "vmm/base/signal_watcher.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/machine.hpp"
#include "vmm/vcpu_state.hpp"
#include "vmm/vm_description.hpp"
#include "vmm/vm_state.hpp"

namespace vvmm::runtime {

// This VM is one of a cluster's (vvmm run/restore --cluster ... --vm NAME).
struct ClusterRole {
    coord::ClusterConfig config;
    std::string vm;
    std::vector<uint8_t> secret;
    uint64_t restore_epoch = 0;  // restore: the epoch; resumes when every VM has loaded it
    std::optional<coord::RebuildContext> rebuild;  // restore --lost: this VM's part in rebuilding lost VMs

    // Where this VM's node keeps the cluster's checkpoints.
    std::string node_root() const { return config.node_checkpoint_dir(config.vm(vm)->node).string(); }
    // Where a diskless cluster persists epochs (persist_every); empty: nowhere.
    std::string persist_dir() const { return config.persist_every ? config.persist_dir.string() : std::string(); }
};

struct BootRequest {
    vmm::VmDescription vm;  // recorded in its checkpoints
    std::string api_socket;
    std::optional<ClusterRole> cluster;
    std::string checkpoint_key;  // key file sealing checkpoints; empty: the default (not for clusters)
    std::string checkpoint_dir;  // where checkpoints go (a cluster's: its checkpoint_dir); empty: none
};

struct RestoreRequest {
    std::string dir;
    std::string api_socket;
    std::string console;  // empty: as recorded in the checkpoint
    bool verify_full = false;
    vmm::ClockMode clock = vmm::ClockMode::keep;
    std::optional<ClusterRole> cluster;
    std::string checkpoint_key;  // as for BootRequest: the key its checkpoints were sealed with
    bool trust_unsigned = false;  // restore a checkpoint whose seal is missing or wrong
    // Where the restored VM's checkpoints go; empty: beside the restored one
    // (a cluster's: its checkpoint_dir).
    std::string checkpoint_dir;
    // The VM's network as the cluster places it now (it may have moved to
    // other hosts); empty: as recorded. MACs must match the recorded ones.
    std::vector<vmm::NicDescription> nics;
};

class VmSession : public control::ControlHandler {
public:
    static Result<std::unique_ptr<VmSession>> boot(const BootRequest& request);
    static Result<std::unique_ptr<VmSession>> restore(const RestoreRequest& request);
    ~VmSession() override;

    // Runs the VM until it ends.
    vmm::MachineExit run();
    nlohmann::json handle(const control::ControlRequest& request) override;
    bool stopped_by_signal() const { return signal_.load() != 0; }

private:
    VmSession() = default;
    // Must come before any thread is created (they inherit the blocked signals).
    Result<void> watch_signals();
    Result<void> build(const vmm::VmDescription& vm);
    Result<void> collect_components();
    Result<void> start_services(const std::string& api_socket);
    Result<std::vector<dev::NicConfig>> nics(const std::vector<vmm::NicDescription>& nics);
    Result<void> load_channel_state(const std::string& dir, const ckpt::Manifest& m);
    Result<void> serve_memory(std::vector<ckpt::ChainLink> chain, bool verify_full);
    Result<void> restore_sections(const std::vector<ckpt::Section>& sections, vmm::ClockMode clock);
    nlohmann::json status() const;
    std::string persist_dir() const { return cluster_ ? cluster_->persist_dir() : std::string(); }

    std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
    // SIGINT/SIGTERM/SIGHUP end the VM through the normal path; one that
    // comes before the machine exists is kept for run().
    std::atomic<int> signal_{0};
    std::atomic<vmm::Machine*> machine_for_signals_{nullptr};
    std::unique_ptr<SignalWatcher> signals_;
    vmm::VmDescription vm_;  // as built; what its checkpoints record
    std::function<Result<ckpt::SealKey>()> seal_key_;
    std::string checkpoint_dir_;
    std::unique_ptr<vmm::KvmSystem> kvm_;
    std::unique_ptr<vmm::Machine> machine_;
    std::unique_ptr<ckpt::LazyMemory> lazy_;
    std::unique_ptr<dev::PcBoard> board_;
    std::unique_ptr<vmm::VmState> vm_state_;
    std::vector<std::unique_ptr<vmm::VcpuState>> vcpu_states_;
    std::vector<Snapshottable*> components_;
    std::unique_ptr<ckpt::Checkpointer> checkpointer_;
    std::unique_ptr<control::ControlServer> api_;
    std::optional<ClusterRole> cluster_;
    std::shared_ptr<net::PeerMesh> mesh_;  // the cluster's mesh (also owned by the board)
    std::unique_ptr<coord::ClusterMember> member_;
    bool restored_ = false;
    double restore_ms_ = 0;
};

}  // namespace vvmm::runtime
