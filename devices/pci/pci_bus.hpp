// PCI bus 0 behind the conf1 mechanism: an address latch at 0xCF8 and a data
// window at 0xCFC..0xCFF. Slot 0 is the host bridge.
#pragma once

#include <array>
#include <memory>
#include <mutex>

#include "devices/pci/pci_config_space.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/snapshottable.hpp"
#include "vmm/io_bus.hpp"

namespace vvmm::dev {

class PciFunction {
public:
    virtual ~PciFunction() = default;
    virtual PciConfigSpace& config() = 0;
    // Config accesses may have side effects (MSI-X enable, BAR moves).
    virtual uint32_t config_read(size_t offset, size_t size) { return config().read(offset, size); }
    virtual void config_write(size_t offset, size_t size, uint32_t value) { config().write(offset, size, value); }
};

class PciBus : public vmm::BusDevice, public Snapshottable {
public:
    static constexpr uint64_t kConfigAddressPort = 0xCF8;
    static constexpr unsigned kSlots = 32;

    PciBus();
    // Puts the function at the first free slot; returns the slot.
    Result<unsigned> add(std::shared_ptr<PciFunction> function);

    // Port window 0xCF8..0xCFF.
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The conf1 address latch (functions save their own config space).
    std::string_view section() const override { return "pci-bus0"; }
    uint16_t version() const override { return 1; }
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;

private:
    PciFunction* target(uint32_t address, size_t& reg) const;

    mutable std::mutex mutex_;
    uint32_t address_ = 0;
    std::array<std::shared_ptr<PciFunction>, kSlots> slots_;
};

}  // namespace vvmm::dev
