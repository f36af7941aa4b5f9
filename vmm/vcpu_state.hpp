// The saved state of one vCPU: everything KVM keeps for it (CPUID, general
// and segment registers, FPU/XSAVE, XCRs, MSRs, LAPIC, pending events, MP
// state, debug registers), as one checkpoint section "vcpu<N>".
#pragma once

#include <string>
#include <vector>

#include "vmm/base/snapshottable.hpp"
#include "vmm/kvm_vcpu.hpp"

namespace vvmm::vmm {

class VcpuState : public Snapshottable {
public:
    // `msr_indices`: the MSRs KVM reports (KVM_GET_MSR_INDEX_LIST); the ones
    // this vCPU cannot read are dropped on the first save.
    VcpuState(KvmVcpu& vcpu, int vm_fd, std::vector<uint32_t> msr_indices);

    std::string_view section() const override { return name_; }
    uint16_t version() const override { return 1; }
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;

private:
    Result<std::vector<kvm_msr_entry>> read_msrs() const;
    KvmVcpu& vcpu_;
    int vm_fd_;
    std::string name_;
    mutable std::vector<uint32_t> msr_indices_;
    mutable bool msr_indices_checked_ = false;
};

}  // namespace vvmm::vmm
