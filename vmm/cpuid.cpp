#include "vmm/cpuid.hpp"

namespace vvmm::vmm {
namespace {

constexpr uint32_t kLeaf1EcxHypervisor = 1u << 31;
constexpr uint32_t kLeaf1EdxHtt = 1u << 28;
constexpr uint32_t kTopoLevelSmt = 1, kTopoLevelCore = 2;

unsigned bits_for(unsigned n)
{
    unsigned b = 0;
    while ((1u << b) < n) ++b;
    return b;
}

// Leaf 0xB/0x1F: one thread per core, `cpus` cores in one package.
void set_topology_leaf(kvm_cpuid_entry2& e, unsigned apic_id, unsigned cpus)
{
    e.edx = apic_id;
    switch (e.index) {
    case 0:
        e.eax = 0;
        e.ebx = 1;
        e.ecx = (kTopoLevelSmt << 8) | e.index;
        break;
    case 1:
        e.eax = bits_for(cpus);
        e.ebx = cpus;
        e.ecx = (kTopoLevelCore << 8) | e.index;
        break;
    default:
        e.eax = e.ebx = 0;
        e.ecx = e.index;
        break;
    }
}

}  // namespace

std::vector<kvm_cpuid_entry2> vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported, unsigned vcpu_index,
                                         unsigned cpus)
{
    std::vector<kvm_cpuid_entry2> out = supported;
    const unsigned apic_id = vcpu_index;
    for (auto& e : out) {
        switch (e.function) {
        case 1:
            e.ebx = (apic_id << 24) | ((cpus & 0xff) << 16) | (8u << 8) | (e.ebx & 0xff);
            e.ecx |= kLeaf1EcxHypervisor;
            if (cpus > 1) e.edx |= kLeaf1EdxHtt;
            else e.edx &= ~kLeaf1EdxHtt;
            break;
        case 4: {
            // Deterministic cache parameters: cores per package in 31:26,
            // threads sharing this cache in 25:14 (L1/L2 per core, L3 shared).
            const uint32_t level = (e.eax >> 5) & 7;
            e.eax &= 0x3ff;
            if (e.eax & 0x1f) e.eax |= ((cpus - 1) << 26) | ((level >= 3 ? cpus - 1 : 0) << 14);
            break;
        }
        case 0xb:
        case 0x1f:
            set_topology_leaf(e, apic_id, cpus);
            break;
        default:
            break;
        }
    }
    return out;
}

}  // namespace vvmm::vmm
