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

private:
    explicit KvmVm(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

}  // namespace vvmm::vmm
