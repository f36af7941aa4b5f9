#include <doctest/doctest.h>

#include "vmm/cpuid.hpp"

using namespace vvmm::vmm;

namespace {
kvm_cpuid_entry2 leaf(uint32_t fn, uint32_t index = 0)
{
    kvm_cpuid_entry2 e{};
    e.function = fn;
    e.index = index;
    e.ebx = 0x00ff0000;
    return e;
}
const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, uint32_t fn, uint32_t index = 0)
{
    for (const auto& e : v)
        if (e.function == fn && e.index == index) return &e;
    return nullptr;
}
}  // namespace

TEST_CASE("leaf 1 carries this vCPU's APIC id, the CPU count and the hypervisor bit")
{
    std::vector<kvm_cpuid_entry2> supported = {leaf(0), leaf(1), leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)};
    auto c = vcpu_cpuid(supported, 3, 4);
    const auto* l1 = find(c, 1);
    REQUIRE(l1);
    CHECK((l1->ebx >> 24) == 3);
    CHECK(((l1->ebx >> 16) & 0xff) == 4);
    CHECK((l1->ecx & (1u << 31)) != 0);
    CHECK((l1->edx & (1u << 28)) != 0);
    auto one = vcpu_cpuid(supported, 0, 1);
    CHECK((find(one, 1)->edx & (1u << 28)) == 0);
}

TEST_CASE("leaf 0xB describes one thread per core and n cores")
{
    std::vector<kvm_cpuid_entry2> supported = {leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)};
    auto c = vcpu_cpuid(supported, 2, 3);
    CHECK(find(c, 0xb, 0)->ebx == 1);
    CHECK(((find(c, 0xb, 0)->ecx >> 8) & 0xff) == 1);
    CHECK(find(c, 0xb, 1)->ebx == 3);
    CHECK(find(c, 0xb, 1)->eax == 2);  // 2 bits of APIC id for 3 cores
    CHECK(((find(c, 0xb, 1)->ecx >> 8) & 0xff) == 2);
    CHECK(((find(c, 0xb, 2)->ecx >> 8) & 0xff) == 0);
    for (uint32_t i = 0; i < 3; ++i) CHECK(find(c, 0xb, i)->edx == 2);
}

TEST_CASE("leaf 4: cores per package, L3 shared by all, L1 per core")
{
    kvm_cpuid_entry2 l1 = leaf(4, 0), l3 = leaf(4, 3), end = leaf(4, 4);
    l1.eax = (1u << 5) | 1 | (7u << 26) | (1u << 14);  // host: level 1 data cache, 8 cores, 2 threads
    l3.eax = (3u << 5) | 3 | (7u << 26) | (15u << 14);
    end.eax = 0;                                         // no more caches
    auto c = vcpu_cpuid({l1, l3, end}, 0, 4);
    CHECK((find(c, 4, 0)->eax >> 26) == 3);
    CHECK(((find(c, 4, 0)->eax >> 14) & 0xfff) == 0);
    CHECK(((find(c, 4, 3)->eax >> 14) & 0xfff) == 3);
    CHECK((find(c, 4, 3)->eax & 0x3ff) == ((3u << 5) | 3));
    CHECK(find(c, 4, 4)->eax == 0);
}
