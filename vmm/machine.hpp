// A running VM: the KVM VM, its memory, its vCPUs (one thread each) and the
// buses their exits are dispatched to. Owns the "how does this VM end" state.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm/base/log.hpp"
#include "vmm/base/result.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/io_bus.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/kvm_vcpu.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::vmm {

// Why the VM ended: exit status for the process and one line for the user
// (empty for a clean guest-initiated reset).
struct MachineExit {
    int status = 0;
    std::string message;
};

class Machine {
public:
    static Result<std::unique_ptr<Machine>> create(const KvmSystem& kvm, unsigned cpus, uint64_t mem_size,
                                                   bool huge_pages = false);
    ~Machine();

    KvmVm& vm() { return vm_; }
    GuestMemory& memory() { return memory_; }
    KvmVcpu& vcpu(unsigned i) { return *vcpus_.at(i); }
    unsigned cpu_count() const { return static_cast<unsigned>(vcpus_.size()); }
    IoBus& pio_bus() { return pio_; }
    IoBus& mmio_bus() { return mmio_; }

    // Starts one thread per vCPU and blocks until the VM ends.
    MachineExit run();
    // Ends the VM; callable from any thread.
    // The first request wins.
    void request_exit(MachineExit reason);

    // Parks every vCPU thread outside KVM_RUN, with any port or MMIO access
    // it was doing completed, so vCPU state can be read and set. Returns once
    // all are parked (or the VM is ending). Callable from any thread but one
    // vCPU's; pause/resume calls must not overlap.
    void pause();
    void resume();
    bool running_vcpus() const { return thread_count_ != 0; }

private:
    Machine(KvmVm vm, GuestMemory memory);
    Result<void> init_vcpu(KvmVcpu& vcpu, unsigned cpus, const std::vector<kvm_cpuid_entry2>& supported,
                           const std::vector<uint32_t>& msr_list);
    void vcpu_loop(KvmVcpu& vcpu);
    // Returns false when the vCPU must stop.
    bool handle_exit(KvmVcpu& vcpu);
    void handle_io(kvm_run* run);
    void handle_mmio(kvm_run* run);
    void fatal_exit(const KvmVcpu& vcpu, const std::string& what);
    void kick_all();
    void kick_locked();  // threads_mutex_ held
    // Lets KVM finish the instruction behind the last I/O exit, then waits
    // while a pause is requested.
    void park(KvmVcpu& vcpu);

    KvmVm vm_;
    GuestMemory memory_;
    std::vector<std::unique_ptr<KvmVcpu>> vcpus_;
    // threads_ changes only under threads_mutex_; once joining_ is set only
    // run() touches it (a kick from another thread must never reach a
    // thread that run() has joined).
    std::mutex threads_mutex_;
    std::vector<std::thread> threads_;
    bool joining_ = false;
    std::atomic<size_t> thread_count_{0};
    IoBus pio_{"port I/O bus"};
    IoBus mmio_{"MMIO bus"};

    std::atomic<bool> stopping_{false};
    std::mutex exit_mutex_;
    std::condition_variable exit_cv_;
    std::optional<MachineExit> exit_;

    std::mutex pause_mutex_;
    std::condition_variable pause_cv_;
    std::atomic<bool> pause_requested_{false};
    unsigned parked_ = 0;
    RateLimitedLog unhandled_log_;
};

}  // namespace vvmm::vmm
