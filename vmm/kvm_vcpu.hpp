// One KVM vCPU: its fd and the shared kvm_run page.
#pragma once

#include <linux/kvm.h>

#include <vector>

#include "vmm/base/memory_mapping.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::vmm {

class KvmVcpu {
public:
    static Result<KvmVcpu> create(const KvmSystem& kvm, const KvmVm& vm, unsigned index);

    unsigned index() const { return index_; }
    int fd() const { return fd_.get(); }
    kvm_run* run_page() const { return reinterpret_cast<kvm_run*>(run_.data()); }

    Result<void> set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
    Result<kvm_regs> regs() const;
    Result<void> set_regs(const kvm_regs& r);
    Result<kvm_sregs> sregs() const;
    Result<void> set_sregs(const kvm_sregs& s);
    Result<void> set_fpu(const kvm_fpu& f);
    Result<void> set_msrs(const std::vector<kvm_msr_entry>& msrs);
    Result<kvm_lapic_state> lapic() const;
    Result<void> set_lapic(const kvm_lapic_state& s);
    // Tells the guest's kvmclock that the vCPU was paused (after a restore),
    // so the guest does not report the gap as a soft lockup. A guest without
    // kvmclock is not an error.
    Result<void> note_paused();

private:
    KvmVcpu(UniqueFd fd, MemoryMapping run, unsigned index) : fd_(std::move(fd)), run_(std::move(run)), index_(index) {}
    UniqueFd fd_;
    MemoryMapping run_;
    unsigned index_;
};

}  // namespace vvmm::vmm
