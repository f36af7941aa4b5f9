#include "vmm/long_mode_setup.hpp"

#include "vmm/base/le.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {
namespace {

constexpr uint16_t kCodeSel = 0x10, kDataSel = 0x18, kTssSel = 0x20;
constexpr uint64_t kPte_P = 1, kPte_RW = 2, kPte_PS = 0x80;
constexpr uint64_t kCr0_PE = 1, kCr0_MP = 2, kCr0_ET = 0x10, kCr0_NE = 0x20, kCr0_WP = 0x10000, kCr0_PG = 0x80000000;
constexpr uint64_t kCr4_PAE = 0x20;
constexpr uint64_t kEfer_LME = 0x100, kEfer_LMA = 0x400;

// Flags: bits 0-7 access byte, bits 12-15 the G/DB/L/AVL nibble.
constexpr uint16_t kCode64Flags = 0xA09B;
constexpr uint16_t kDataFlags = 0xC093;
constexpr uint16_t kTssFlags = 0x008B;

kvm_segment segment_from(uint16_t selector, uint16_t flags, uint32_t base, uint32_t limit)
{
    kvm_segment s{};
    s.base = base;
    s.limit = limit;
    s.selector = selector;
    s.type = flags & 0xF;
    s.s = (flags >> 4) & 1;
    s.dpl = (flags >> 5) & 3;
    s.present = (flags >> 7) & 1;
    s.avl = (flags >> 12) & 1;
    s.l = (flags >> 13) & 1;
    s.db = (flags >> 14) & 1;
    s.g = (flags >> 15) & 1;
    return s;
}

}  // namespace

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit)
{
    return ((uint64_t(base) & 0xff000000) << 32) | ((uint64_t(flags) & 0xf0ff) << 40) |
           ((uint64_t(limit) & 0x000f0000) << 32) | ((uint64_t(base) & 0x00ffffff) << 16) |
           (uint64_t(limit) & 0x0000ffff);
}

Result<void> write_boot_tables(const GuestMemory& mem)
{
    TRY_ASSIGN(auto gdt, mem.span(layout::kBootGdt, 5 * 8));
    const uint64_t entries[5] = {0, 0, gdt_entry(kCode64Flags, 0, 0xfffff), gdt_entry(kDataFlags, 0, 0xfffff),
                                 gdt_entry(kTssFlags, 0, 0xfffff)};
    for (int i = 0; i < 5; ++i) store_le(gdt.data() + i * 8, entries[i]);
    TRY_ASSIGN(auto idt, mem.span(layout::kBootIdt, 8));
    store_le<uint64_t>(idt.data(), 0);

    TRY_ASSIGN(auto pml4, mem.span(layout::kPml4, 4096));
    TRY_ASSIGN(auto pdpt, mem.span(layout::kPdpt, 4096));
    TRY_ASSIGN(auto pd, mem.span(layout::kPd, 4 * 4096));
    std::fill(pml4.begin(), pml4.end(), uint8_t{0});
    std::fill(pdpt.begin(), pdpt.end(), uint8_t{0});
    store_le<uint64_t>(pml4.data(), layout::kPdpt | kPte_P | kPte_RW);
    for (uint64_t i = 0; i < 4; ++i)
        store_le<uint64_t>(pdpt.data() + i * 8, (layout::kPd + i * 4096) | kPte_P | kPte_RW);
    for (uint64_t i = 0; i < 4 * 512; ++i)
        store_le<uint64_t>(pd.data() + i * 8, (i << 21) | kPte_P | kPte_RW | kPte_PS);
    return ok();
}

void set_long_mode_sregs(kvm_sregs& sregs)
{
    sregs.gdt.base = layout::kBootGdt;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.idt.base = layout::kBootIdt;
    sregs.idt.limit = 7;
    sregs.cs = segment_from(kCodeSel, kCode64Flags, 0, 0xfffff);
    const kvm_segment data = segment_from(kDataSel, kDataFlags, 0, 0xfffff);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    sregs.tr = segment_from(kTssSel, kTssFlags, 0, 0xfffff);
    sregs.cr3 = layout::kPml4;
    sregs.cr4 |= kCr4_PAE;
    sregs.cr0 = (sregs.cr0 | kCr0_PE | kCr0_MP | kCr0_ET | kCr0_NE | kCr0_WP | kCr0_PG) & ~uint64_t(0x60000000);
    sregs.efer |= kEfer_LME | kEfer_LMA;
}

kvm_regs boot_regs(uint64_t entry, uint64_t boot_params_addr)
{
    kvm_regs r{};
    r.rflags = 0x2;  // bit 1 is always set; IF off
    r.rip = entry;
    r.rsi = boot_params_addr;
    r.rsp = layout::kBootStack;
    r.rbp = layout::kBootStack;
    return r;
}

}  // namespace vvmm::vmm
