// One VM in this process, from creation to exit: the machine, its board,
// the checkpointer and (with --api) the control server. Built either by
// booting a kernel or by restoring a checkpoint; both end in run().
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/checkpointer.hpp"
#include "ckpt/lazy_memory.hpp"
#include "coord/control_server.hpp"
#include "devices/pc_board.hpp"
#include "vmm/base/signal_watcher.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/machine.hpp"
#include "vmm/vcpu_state.hpp"
#include "vmm/vm_config.hpp"
#include "vmm/vm_state.hpp"

namespace vvmm::cli {

struct BootRequest {
    vmm::VmConfig config;
    std::vector<std::string> disk_specs, net_specs;  // as typed, recorded in checkpoints
    std::string api_socket;
};

struct RestoreRequest {
    std::string dir;
    std::string api_socket;
    std::string console;  // empty: as recorded in the checkpoint
    bool verify_full = false;
    vmm::ClockMode clock = vmm::ClockMode::keep;
};

class VmSession : public coord::ControlHandler {
public:
    static Result<std::unique_ptr<VmSession>> boot(const BootRequest& request);
    static Result<std::unique_ptr<VmSession>> restore(const RestoreRequest& request);
    ~VmSession() override;

    // Runs the VM until it ends.
    vmm::MachineExit run();
    nlohmann::json handle(const nlohmann::json& request) override;

private:
    VmSession() = default;
    // Must come before any thread is created (they inherit the blocked signals).
    Result<void> watch_signals();
    Result<void> build(const ckpt::VmShape& shape);
    Result<void> collect_components();
    Result<void> start_services(const std::string& api_socket);

    std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
    // SIGINT/SIGTERM/SIGHUP end the VM through the normal path; one that
    // comes before the machine exists is kept for run().
    std::atomic<int> signal_{0};
    std::atomic<vmm::Machine*> machine_for_signals_{nullptr};
    std::unique_ptr<SignalWatcher> signals_;
    ckpt::VmShape shape_;
    std::unique_ptr<vmm::KvmSystem> kvm_;
    std::unique_ptr<vmm::Machine> machine_;
    std::unique_ptr<ckpt::LazyMemory> lazy_;
    std::unique_ptr<dev::PcBoard> board_;
    std::unique_ptr<vmm::VmState> vm_state_;
    std::vector<std::unique_ptr<vmm::VcpuState>> vcpu_states_;
    std::vector<Snapshottable*> components_;
    std::unique_ptr<ckpt::Checkpointer> checkpointer_;
    std::unique_ptr<coord::ControlServer> api_;
    bool restored_ = false;
    double restore_ms_ = 0;
};

// Runs the session, prints how the VM ended, returns the exit status.
int run_session(VmSession& session);

}  // namespace vvmm::cli
