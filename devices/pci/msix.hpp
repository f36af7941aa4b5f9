// MSI-X: the vector table and pending-bit array a device exposes in a BAR,
// plus the enable/function-mask bits of its capability. Pure state machine:
// delivery and routing are callbacks, so it is unit-tested without KVM.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/base/state_stream.hpp"
#include "vmm/gsi_router.hpp"

namespace vvmm::dev {

class Msix {
public:
    static constexpr size_t kEntrySize = 16;
    // Deliver: raise the vector now. Route: the vector's message changed
    // (called before the next delivery of it).
    using Deliver = std::function<void(unsigned vector)>;
    using Route = std::function<void(unsigned vector, const vmm::MsiMessage&)>;

    Msix(unsigned vectors, Deliver deliver, Route route);

    unsigned vectors() const { return static_cast<unsigned>(entries_.size()); }
    size_t table_bytes() const { return entries_.size() * kEntrySize; }
    size_t pba_bytes() const { return ((entries_.size() + 63) / 64) * 8; }

    // Capability message-control bits.
    void set_control(bool enabled, bool function_masked);
    bool enabled() const { return enabled_; }

    void table_read(uint64_t offset, std::span<uint8_t> data) const;
    void table_write(uint64_t offset, std::span<const uint8_t> data);
    void pba_read(uint64_t offset, std::span<uint8_t> data) const;

    // The device wants to interrupt: delivered, or left pending while masked.
    void signal(unsigned vector);
    bool pending(unsigned vector) const;
    vmm::MsiMessage message(unsigned vector) const;

    void save(StateWriter& out) const;
    // Re-routes every vector and delivers what is pending and unmasked.
    Result<void> restore(StateReader& in);

private:
    struct Entry {
        uint32_t addr_lo = 0, addr_hi = 0, data = 0, control = 1;  // masked after reset
        bool pending = false;
    };
    bool masked(unsigned v) const { return !enabled_ || function_masked_ || (entries_[v].control & 1); }
    void deliver_pending();

    mutable std::mutex mutex_;
    std::vector<Entry> entries_;
    bool enabled_ = false, function_masked_ = false;
    Deliver deliver_;
    Route route_;
};

}  // namespace vvmm::dev
