#include "devices/pci/msix.hpp"

#include <cstring>

namespace vvmm::dev {

Msix::Msix(unsigned vectors, Deliver deliver, Route route)
    : entries_(vectors), routed_(vectors), deliver_(std::move(deliver)), route_(std::move(route)) {}

vmm::MsiMessage Msix::message_locked(unsigned v) const
{
    const Entry& e = entries_[v];
    return {(uint64_t(e.addr_hi) << 32) | e.addr_lo, e.data};
}

void Msix::sync_routes_and_deliver()
{
    std::lock_guard routing(route_mutex_);
    std::vector<std::pair<unsigned, vmm::MsiMessage>> stale;
    {
        std::lock_guard lock(mutex_);
        for (unsigned v = 0; v < entries_.size(); ++v)
            if (!masked(v) && routed_[v] != message_locked(v)) stale.push_back({v, message_locked(v)});
    }
    for (const auto& [v, msg] : stale) route_(v, msg);
    std::vector<unsigned> ready;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [v, msg] : stale) routed_[v] = msg;
        for (unsigned v = 0; v < entries_.size(); ++v) {
            if (entries_[v].pending && deliverable(v)) {
                entries_[v].pending = false;
                ready.push_back(v);
            }
        }
    }
    for (unsigned v : ready) deliver_(v);
}

void Msix::set_control(bool enabled, bool function_masked)
{
    {
        std::lock_guard lock(mutex_);
        enabled_ = enabled;
        function_masked_ = function_masked;
    }
    sync_routes_and_deliver();
}

void Msix::table_read(uint64_t offset, std::span<uint8_t> data) const
{
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        const uint64_t at = offset + i;
        const size_t v = at / kEntrySize;
        if (v >= entries_.size()) {
            data[i] = 0;
            continue;
        }
        const Entry& e = entries_[v];
        const uint32_t words[4] = {e.addr_lo, e.addr_hi, e.data, e.control};
        data[i] = static_cast<uint8_t>(words[(at % kEntrySize) / 4] >> (8 * (at % 4)));
    }
}

void Msix::table_write(uint64_t offset, std::span<const uint8_t> data)
{
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < data.size(); ++i) {
            const uint64_t at = offset + i;
            const size_t v = at / kEntrySize;
            if (v >= entries_.size()) continue;
            Entry& e = entries_[v];
            uint32_t* words[4] = {&e.addr_lo, &e.addr_hi, &e.data, &e.control};
            uint32_t& w = *words[(at % kEntrySize) / 4];
            const unsigned shift = 8 * (at % 4);
            w = (w & ~(0xffu << shift)) | (uint32_t(data[i]) << shift);
            if (words[3] == &w) w &= 1;  // only the mask bit of vector control is defined
        }
    }
    // A masked vector's message is routed when it is unmasked.
    sync_routes_and_deliver();
}

void Msix::pba_read(uint64_t offset, std::span<uint8_t> data) const
{
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < data.size(); ++i) {
        uint8_t b = 0;
        for (unsigned bit = 0; bit < 8; ++bit) {
            const uint64_t v = (offset + i) * 8 + bit;
            if (v < entries_.size() && entries_[v].pending) b |= uint8_t(1u << bit);
        }
        data[i] = b;
    }
}

void Msix::signal(unsigned vector)
{
    {
        std::lock_guard lock(mutex_);
        if (vector >= entries_.size()) return;
        if (!deliverable(vector)) {
            entries_[vector].pending = true;
            return;
        }
    }
    deliver_(vector);
}

bool Msix::pending(unsigned vector) const
{
    std::lock_guard lock(mutex_);
    return vector < entries_.size() && entries_[vector].pending;
}

bool Msix::is_masked(unsigned vector) const
{
    std::lock_guard lock(mutex_);
    return vector >= entries_.size() || masked(vector);
}

vmm::MsiMessage Msix::message(unsigned vector) const
{
    std::lock_guard lock(mutex_);
    (void)entries_.at(vector);  // out of range throws, as for any caller's bug
    return message_locked(vector);
}

void Msix::save(StateWriter& out) const
{
    std::lock_guard lock(mutex_);
    out.u32(static_cast<uint32_t>(entries_.size()));
    for (const auto& e : entries_) {
        out.u32(e.addr_lo);
        out.u32(e.addr_hi);
        out.u32(e.data);
        out.u32(e.control);
        out.boolean(e.pending);
    }
    out.boolean(enabled_);
    out.boolean(function_masked_);
}

Result<void> Msix::restore(StateReader& in)
{
    TRY_ASSIGN(uint32_t n, in.u32());
    if (n != entries_.size()) return in.err("MSI-X table of " + std::to_string(n) + " vectors, device has " + std::to_string(entries_.size()));
    std::vector<Entry> entries(n);
    for (auto& e : entries) {
        TRY_ASSIGN(e.addr_lo, in.u32());
        TRY_ASSIGN(e.addr_hi, in.u32());
        TRY_ASSIGN(e.data, in.u32());
        TRY_ASSIGN(e.control, in.u32());
        TRY_ASSIGN(e.pending, in.boolean());
    }
    TRY_ASSIGN(bool enabled, in.boolean());
    TRY_ASSIGN(bool function_masked, in.boolean());
    {
        std::lock_guard lock(mutex_);
        entries_ = std::move(entries);
        enabled_ = enabled;
        function_masked_ = function_masked;
        routed_.assign(n, std::nullopt);  // this VM's routes are new
    }
    sync_routes_and_deliver();
    return ok();
}

}  // namespace vvmm::dev
