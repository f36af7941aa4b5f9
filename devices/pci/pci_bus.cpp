#include "devices/pci/pci_bus.hpp"

#include "vmm/base/le.hpp"

namespace vvmm::dev {
namespace {

class HostBridge : public PciFunction {
public:
    HostBridge() : config_(0x8086, 0x0d57, 0x06, 0x00, 0x00) {}  // class 06/00: host bridge
    PciConfigSpace& config() override { return config_; }

private:
    PciConfigSpace config_;
};

}  // namespace

PciBus::PciBus() { slots_[0] = std::make_shared<HostBridge>(); }

Result<unsigned> PciBus::add(std::shared_ptr<PciFunction> function)
{
    std::lock_guard lock(mutex_);
    for (unsigned s = 1; s < kSlots; ++s) {
        if (!slots_[s]) {
            slots_[s] = std::move(function);
            return s;
        }
    }
    return Error("PCI bus is full (31 devices)");
}

PciFunction* PciBus::target(uint32_t address, size_t& reg) const
{
    const bool enabled = address & 0x80000000u;
    const uint32_t bus = (address >> 16) & 0xff, slot = (address >> 11) & 0x1f, function = (address >> 8) & 0x7;
    reg = address & 0xfc;
    if (!enabled || bus != 0 || function != 0) return nullptr;
    return slots_[slot].get();
}

void PciBus::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(mutex_);
    uint32_t value = 0xffffffffu;  // no device: all ones
    if (offset < 4) {
        value = address_ >> (8 * offset);
    } else {
        size_t reg = 0;
        if (PciFunction* f = target(address_, reg)) {
            const size_t byte = reg + (offset - 4);
            value = f->config_read(byte, data.size());
        }
    }
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(value >> (8 * i));
}

void PciBus::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(mutex_);
    uint32_t value = 0;
    for (size_t i = 0; i < data.size(); ++i) value |= uint32_t(data[i]) << (8 * i);
    if (offset < 4) {
        if (offset == 0 && data.size() == 4) address_ = value;  // conf1 takes only dword writes to 0xCF8
        return;
    }
    size_t reg = 0;
    if (PciFunction* f = target(address_, reg)) f->config_write(reg + (offset - 4), data.size(), value);
}

Result<void> PciBus::save(StateWriter& out) const
{
    std::lock_guard lock(mutex_);
    out.u32(address_);
    return ok();
}

Result<void> PciBus::restore(StateReader& in, uint16_t)
{
    std::lock_guard lock(mutex_);
    TRY_ASSIGN(address_, in.u32());
    return in.expect_end();
}

}  // namespace vvmm::dev
