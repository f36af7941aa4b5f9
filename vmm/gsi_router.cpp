#include "vmm/gsi_router.hpp"

namespace vvmm::vmm {

uint32_t GsiRouter::allocate_msi_gsi()
{
    std::lock_guard lock(mutex_);
    return next_gsi_++;
}

Result<void> GsiRouter::set_msi(uint32_t gsi, const MsiMessage& msg)
{
    std::lock_guard lock(mutex_);
    auto it = msi_.find(gsi);
    if (it != msi_.end() && it->second == msg) return ok();
    msi_[gsi] = msg;
    return vm_.set_gsi_routing(table(msi_));
}

std::vector<kvm_irq_routing_entry> GsiRouter::table(const std::map<uint32_t, MsiMessage>& msi)
{
    std::vector<kvm_irq_routing_entry> t;
    auto irqchip = [&](uint32_t gsi, uint32_t chip, uint32_t pin) {
        kvm_irq_routing_entry e{};
        e.gsi = gsi;
        e.type = KVM_IRQ_ROUTING_IRQCHIP;
        e.u.irqchip.irqchip = chip;
        e.u.irqchip.pin = pin;
        t.push_back(e);
    };
    // Exactly what KVM sets up by default: ISA IRQs on the PIC pair
    // and every GSI on the IOAPIC pin of the same number.
    for (uint32_t gsi = 0; gsi < 16; ++gsi)
        irqchip(gsi, gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, gsi % 8);
    for (uint32_t gsi = 0; gsi < 24; ++gsi) irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi);
    for (const auto& [gsi, m] : msi) {
        kvm_irq_routing_entry e{};
        e.gsi = gsi;
        e.type = KVM_IRQ_ROUTING_MSI;
        e.u.msi.address_lo = static_cast<uint32_t>(m.address);
        e.u.msi.address_hi = static_cast<uint32_t>(m.address >> 32);
        e.u.msi.data = m.data;
        t.push_back(e);
    }
    return t;
}

}  // namespace vvmm::vmm
