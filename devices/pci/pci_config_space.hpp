// A type 0 PCI configuration space: 256 bytes, a write mask per byte,
// 32-bit memory BARs with sizing, and a capability list. Pure code.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>

#include "vmm/base/result.hpp"

namespace vvmm::dev {

namespace pci {
inline constexpr size_t kVendorId = 0x00, kDeviceId = 0x02, kCommand = 0x04, kStatus = 0x06, kRevision = 0x08,
                        kClassProgIf = 0x09, kSubclass = 0x0a, kClass = 0x0b, kHeaderType = 0x0e, kBar0 = 0x10,
                        kSubsystemVendorId = 0x2c, kSubsystemId = 0x2e, kCapabilitiesPtr = 0x34,
                        kInterruptLine = 0x3c, kInterruptPin = 0x3d;
inline constexpr uint16_t kCommandIo = 0x1, kCommandMemory = 0x2, kCommandBusMaster = 0x4,
                          kCommandIntxDisable = 0x400;
inline constexpr uint16_t kStatusCapList = 0x10;
inline constexpr unsigned kBarCount = 6;
inline constexpr uint8_t kCapMsix = 0x11, kCapVendor = 0x09;
}  // namespace pci

class PciConfigSpace {
public:
    // Called after a write that changed a BAR's address or the memory-enable
    // bit: the owner moves its MMIO window.
    using BarListener = std::function<void(unsigned bar)>;

    PciConfigSpace(uint16_t vendor, uint16_t device, uint8_t class_code, uint8_t subclass, uint8_t prog_if);

    uint32_t read(size_t offset, size_t size) const;
    void write(size_t offset, size_t size, uint32_t value);

    // A 32-bit non-prefetchable memory BAR of `size` bytes (power of two >= 16).
    void add_memory_bar(unsigned bar, uint32_t size);
    void set_bar_listener(BarListener l) { bar_listener_ = std::move(l); }
    // The BAR's current address if memory decoding is on and it is assigned.
    std::optional<uint64_t> bar_address(unsigned bar) const;
    uint32_t bar_size(unsigned bar) const { return bar_size_[bar]; }
    void set_bar_address(unsigned bar, uint32_t address);  // firmware-style assignment before boot

    // Appends a capability with the given body (its first two bytes, id and
    // next, are filled in). Returns the capability's offset. `writable_mask`
    // (same length as body, may be empty) says which body bits the guest may change.
    size_t add_capability(uint8_t id, std::span<const uint8_t> body, std::span<const uint8_t> writable_mask = {});

    bool bus_master() const { return u16(pci::kCommand) & pci::kCommandBusMaster; }
    uint16_t u16(size_t offset) const { return static_cast<uint16_t>(read(offset, 2)); }
    // Raw access for the owner (device-side updates, e.g. MSI-X control).
    std::array<uint8_t, 256>& bytes() { return bytes_; }
    // For restore: every byte as saved. The caller re-maps BARs afterwards.
    // Read-only bytes (ids, capability layout) must match: a checkpoint of a
    // different device is refused.
    Result<void> restore_bytes(std::span<const uint8_t> saved);

private:
    void notify_bars_if_changed(const std::array<std::optional<uint64_t>, pci::kBarCount>& before);

    std::array<uint8_t, 256> bytes_{};
    std::array<uint8_t, 256> writable_{};
    std::array<uint32_t, pci::kBarCount> bar_size_{};
    size_t next_cap_ = 0x40;
    size_t last_cap_ = 0;
    BarListener bar_listener_;
};

}  // namespace vvmm::dev
