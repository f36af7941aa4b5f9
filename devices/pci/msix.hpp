// MSI-X: the vector table and pending-bit array a device exposes in a BAR,
// plus the enable/function-mask bits of its capability. Pure state machine:
// delivery and routing are callbacks, so it is unit-tested without KVM.
//
// Routes follow the table, not the interrupts: a vector is routed when its
// message changes while it can fire (a table write, an enable or mask change,
// a restore), and signal() only checks the mask and delivers, the device's
// own lock the only one taken (Cloud Hypervisor's interrupt manager works the
// same way). A vector whose new message is not routed yet pends until it is.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "vmm/base/state_stream.hpp"
#include "vmm/gsi_router.hpp"

namespace vvmm::dev {

class Msix {
public:
    static constexpr size_t kEntrySize = 16;
    // Deliver: raise the vector now (an irqfd write). Route: point the
    // vector at its message (KVM's GSI routing table); called before the
    // vector is delivered with that message, never from signal().
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

    // The device wants to interrupt: delivered, or left pending while masked
    // (or while its new message is being routed).
    void signal(unsigned vector);
    bool pending(unsigned vector) const;
    // Whether the vector cannot fire now (its mask, the function mask, or MSI-X off).
    bool is_masked(unsigned vector) const;
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
    vmm::MsiMessage message_locked(unsigned v) const;
    // Under mutex_: unmasked, and KVM routes the vector to its message.
    bool deliverable(unsigned v) const { return !masked(v) && routed_[v] == message_locked(v); }
    // Routes every unmasked vector whose message is not routed yet, then
    // delivers what pends and can be delivered now.
    void sync_routes_and_deliver();

    // Taken before mutex_, held while routing: routes are set in the order
    // the table changed, never an older message over a newer one.
    std::mutex route_mutex_;
    mutable std::mutex mutex_;
    std::vector<Entry> entries_;
    std::vector<std::optional<vmm::MsiMessage>> routed_;  // under mutex_; nullopt: not routed
    bool enabled_ = false, function_masked_ = false;
    Deliver deliver_;
    Route route_;
};

}  // namespace vvmm::dev
