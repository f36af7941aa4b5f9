// The CPU state the 64-bit Linux boot protocol asks for at the kernel entry:
// long mode, identity-mapped page tables, a flat GDT with __BOOT_CS = 0x10 and
// __BOOT_DS = 0x18, interrupts off, RSI = boot_params.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

#include "vmm/base/result.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::vmm {

// Writes the GDT, an empty IDT and page tables identity-mapping 0..4 GiB with
// 2 MiB pages into guest memory.
Result<void> write_boot_tables(const GuestMemory& mem);

// Adjusts the BSP's sregs (from KVM_GET_SREGS) for the 64-bit entry.
void set_long_mode_sregs(kvm_sregs& sregs);
kvm_regs boot_regs(uint64_t entry, uint64_t boot_params_addr);

// GDT descriptor encoding, exposed for tests.
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);

}  // namespace vvmm::vmm
