// The CPUID a vCPU sees: what KVM supports, with the topology (APIC id,
// logical count, cores) of this VM and the hypervisor bit. Pure code.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include <vector>

namespace vvmm::vmm {

std::vector<kvm_cpuid_entry2> vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported, unsigned vcpu_index,
                                         unsigned cpu_count);

}  // namespace vvmm::vmm
