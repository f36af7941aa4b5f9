#include "devices/pci/pci_config_space.hpp"

#include <cstdio>
#include <cstring>

#include "vmm/base/le.hpp"

namespace vvmm::dev {

PciConfigSpace::PciConfigSpace(uint16_t vendor, uint16_t device, uint8_t class_code, uint8_t subclass, uint8_t prog_if)
{
    store_le(&bytes_[pci::kVendorId], vendor);
    store_le(&bytes_[pci::kDeviceId], device);
    bytes_[pci::kClass] = class_code;
    bytes_[pci::kSubclass] = subclass;
    bytes_[pci::kClassProgIf] = prog_if;
    bytes_[pci::kRevision] = 1;
    const uint16_t command_writable = pci::kCommandIo | pci::kCommandMemory | pci::kCommandBusMaster |
                                      pci::kCommandIntxDisable;
    store_le(&writable_[pci::kCommand], command_writable);
    writable_[pci::kInterruptLine] = 0xff;
}

uint32_t PciConfigSpace::read(size_t offset, size_t size) const
{
    uint32_t v = 0;
    for (size_t i = 0; i < size && offset + i < bytes_.size(); ++i) v |= uint32_t(bytes_[offset + i]) << (8 * i);
    return v;
}

void PciConfigSpace::write(size_t offset, size_t size, uint32_t value)
{
    std::array<std::optional<uint64_t>, pci::kBarCount> before;
    for (unsigned b = 0; b < pci::kBarCount; ++b) before[b] = bar_address(b);
    for (size_t i = 0; i < size && offset + i < bytes_.size(); ++i) {
        const uint8_t in = static_cast<uint8_t>(value >> (8 * i));
        uint8_t& cur = bytes_[offset + i];
        cur = static_cast<uint8_t>((cur & ~writable_[offset + i]) | (in & writable_[offset + i]));
    }
    notify_bars_if_changed(before);
}

void PciConfigSpace::add_memory_bar(unsigned bar, uint32_t size)
{
    bar_size_[bar] = size;
    // Address bits above the size are writable; the low bits read as zero,
    // which is how the guest learns the size (write ~0, read back).
    store_le<uint32_t>(&writable_[pci::kBar0 + 4 * bar], ~(size - 1));
    store_le<uint32_t>(&bytes_[pci::kBar0 + 4 * bar], 0);  // 32-bit, non-prefetchable memory
}

void PciConfigSpace::set_bar_address(unsigned bar, uint32_t address)
{
    std::array<std::optional<uint64_t>, pci::kBarCount> before;
    for (unsigned b = 0; b < pci::kBarCount; ++b) before[b] = bar_address(b);
    store_le<uint32_t>(&bytes_[pci::kBar0 + 4 * bar], address & ~(bar_size_[bar] - 1));
    notify_bars_if_changed(before);
}

std::optional<uint64_t> PciConfigSpace::bar_address(unsigned bar) const
{
    if (bar >= pci::kBarCount || bar_size_[bar] == 0) return std::nullopt;
    if (!(u16(pci::kCommand) & pci::kCommandMemory)) return std::nullopt;
    const uint32_t addr = read(pci::kBar0 + 4 * bar, 4) & ~0xfu;
    // Unassigned, or left at the all-ones sizing pattern: not decoded.
    if (addr == 0 || addr == (~(bar_size_[bar] - 1) & ~0xfu)) return std::nullopt;
    return addr;
}

void PciConfigSpace::notify_bars_if_changed(const std::array<std::optional<uint64_t>, pci::kBarCount>& before)
{
    if (!bar_listener_) return;
    for (unsigned b = 0; b < pci::kBarCount; ++b)
        if (bar_address(b) != before[b]) bar_listener_(b);
}

size_t PciConfigSpace::add_capability(uint8_t id, std::span<const uint8_t> body, std::span<const uint8_t> writable_mask)
{
    const size_t off = next_cap_;
    bytes_[off] = id;
    bytes_[off + 1] = 0;
    std::memcpy(&bytes_[off + 2], body.data(), body.size());
    for (size_t i = 0; i < writable_mask.size(); ++i) writable_[off + 2 + i] = writable_mask[i];
    if (last_cap_) bytes_[last_cap_ + 1] = static_cast<uint8_t>(off);
    else bytes_[pci::kCapabilitiesPtr] = static_cast<uint8_t>(off);
    store_le<uint16_t>(&bytes_[pci::kStatus], u16(pci::kStatus) | pci::kStatusCapList);
    last_cap_ = off;
    next_cap_ = (off + 2 + body.size() + 3) & ~size_t{3};
    return off;
}

Result<void> PciConfigSpace::restore_bytes(std::span<const uint8_t> saved)
{
    if (saved.size() != bytes_.size()) return Error("PCI config space of " + std::to_string(saved.size()) + " bytes");
    for (size_t i = 0; i < pci::kCommand; ++i)
        if (saved[i] != bytes_[i]) return Error("PCI config space belongs to a different device");
    // Only what the guest can write may differ: a read-only byte that does
    // (class, capability chain, BAR type bits) is not this device's state.
    for (size_t i = 0; i < bytes_.size(); ++i)
        if ((saved[i] ^ bytes_[i]) & ~writable_[i]) {
            char at[8];
            std::snprintf(at, sizeof at, "0x%02zx", i);
            return Error(std::string("PCI config space: read-only byte ") + at + " differs from this device's");
        }
    std::copy(saved.begin(), saved.end(), bytes_.begin());
    return ok();
}

}  // namespace vvmm::dev
