// Dispatch of port I/O and MMIO exits to device models by address range.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

// A device register window. Offsets are relative to the window's base.
// Called from vCPU threads: implementations do their own locking.
class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

class IoBus {
public:
    explicit IoBus(std::string name) : name_(std::move(name)) {}
    // Fails if the range overlaps one already registered.
    Result<void> add(uint64_t base, uint64_t length, std::shared_ptr<BusDevice> device);
    // Removes the range that starts at `base` (a BAR being moved or disabled).
    void remove(uint64_t base);
    // Nothing there: reads see all-ones (an empty bus), writes vanish.
    // Returns false then, so the caller can log it.
    bool read(uint64_t addr, std::span<uint8_t> data) const;
    bool write(uint64_t addr, std::span<const uint8_t> data) const;

private:
    struct Range {
        uint64_t base, length;
        std::shared_ptr<BusDevice> device;
    };
    const Range* find(uint64_t addr, uint64_t len) const;
    std::string name_;
    // Sorted by base. Readers are vCPU threads; writers are rare (a guest
    // moving a BAR), so a shared lock costs nearly nothing.
    mutable std::shared_mutex mutex_;
    std::vector<Range> ranges_;
};

}  // namespace vvmm::vmm
