// A KVM virtual machine: memory slots, in-kernel irqchip and PIT, IRQ lines.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm_system.hpp"

namespace vvmm::vmm {

class KvmVm {
public:
    // Creates the VM with an in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT.
    static Result<KvmVm> create(const KvmSystem& kvm);

    int fd() const { return fd_.get(); }
    Result<void> set_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host, uint32_t flags = 0);
    // Level-triggered ISA/IOAPIC line (for the 16550, as on a PC).
    Result<void> set_irq_line(uint32_t irq, bool level);
    // Interrupts by eventfd: a write to `eventfd` raises `gsi` inside KVM.
    Result<void> set_irqfd(int eventfd, uint32_t gsi, bool assign);
    // Guest writes of `len` bytes (0 = any) to `addr` signal `eventfd`
    // instead of exiting to vvmm.
    Result<void> set_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio, bool assign);
    Result<void> set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries);

    // Dirty logging is switched per slot with set_memory_region(...,
    // KVM_MEM_LOG_DIRTY_PAGES). The bitmap has one bit per 4 KiB page of the
    // slot (`slot_size` bytes), packed in 64-bit words.
    Result<std::vector<uint64_t>> dirty_log(uint32_t slot, uint64_t slot_size);
    // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: dirty_log() then no longer clears
    // and re-protects; clear_dirty_log() does, for the pages given. Must be
    // called before any slot has dirty logging on.
    Result<void> enable_manual_dirty_log_protect(const KvmSystem& kvm);
    // `first_page` and `bitmap.size()*64` must be multiples of 64 (the last
    // word may run past the slot end).
    Result<void> clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                                 const std::vector<uint64_t>& bitmap);

private:
    explicit KvmVm(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace vvmm::vmm
