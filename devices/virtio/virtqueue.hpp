// The split virtqueue (virtio 1.x, 2.6), shared by every device. Pure code
// over GuestMemory: every guest-supplied index, length and address is
// validated, and a bad chain is an error value, never a host crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::dev {

// One guest buffer of a chain, already checked to lie inside guest RAM.
struct ChainSegment {
    uint64_t gpa;
    uint32_t len;
    bool device_writable;
};

// A validated descriptor chain: device-readable segments first, then
// device-writable ones (the spec's order; anything else is refused).
struct DescriptorChain {
    uint16_t head = 0;
    std::vector<ChainSegment> segments;
    uint64_t readable_bytes = 0;
    uint64_t writable_bytes = 0;
};

struct QueueAddresses {
    uint16_t size = 0;
    uint64_t desc = 0, avail = 0, used = 0;
};

class Virtqueue {
public:
    static constexpr uint16_t kMaxSize = 1024;
    static constexpr uint32_t kMaxIndirect = 1024;  // descriptors in one indirect table

    // Checks the queue layout the driver programmed (size a power of two,
    // alignment, rings inside RAM).
    static Result<Virtqueue> create(const vmm::GuestMemory& mem, const QueueAddresses& addr, bool event_idx);

    // The next available chain, nullopt if the driver has posted none, or an
    // error (the device must then go NEEDS_RESET). With notifications on, an
    // empty queue is re-armed and checked again first, so nullopt means the
    // driver will kick for its next buffer.
    Result<std::optional<DescriptorChain>> pop();
    // Gives the most recently popped chain back (the device could not use it yet).
    void undo_pop() { --last_avail_; }
    bool has_available() const;
    // Returns a chain to the driver with `written` bytes stored in its writable part.
    void push_used(uint16_t head, uint32_t written);
    // Whether the driver wants an interrupt for what was pushed since the last call.
    bool should_notify();

    // Kick suppression, the device's side of the bargain: while the device is
    // busy draining a queue (or does not need more buffers), the driver need
    // not kick it. enable_notifications() returns true if buffers arrived
    // meanwhile, in which case the caller must keep draining.
    void disable_notifications();
    bool enable_notifications();

    uint16_t size() const { return addr_.size; }
    uint16_t last_avail() const { return last_avail_; }
    uint16_t used_idx() const { return used_idx_; }
    // For checkpoints: the device-side ring positions, and continuing from them.
    struct Positions {
        uint16_t last_avail = 0, used_idx = 0, signalled_used = 0;
        bool notifications = true;
    };
    Positions positions() const { return {last_avail_, used_idx_, signalled_used_, notifications_}; }
    void set_positions(const Positions& p);
    // What the rings in guest memory say now (for `vvmm status`, to tell who
    // waits for whom): the driver's avail index and flags, the used_event it
    // asked interrupts at, and the used-ring fields we published.
    struct RingView {
        uint16_t avail_idx = 0, avail_flags = 0, used_event = 0;
        uint16_t used_idx = 0, used_flags = 0, avail_event = 0;
    };
    RingView ring_view() const;
    bool event_idx() const { return event_idx_; }

private:
    Virtqueue(const vmm::GuestMemory& mem, const QueueAddresses& addr, bool event_idx)
        : mem_(&mem), addr_(addr), event_idx_(event_idx) {}
    Result<void> walk(uint16_t head, DescriptorChain& chain) const;
    Result<void> walk_indirect(uint64_t table, uint32_t len, DescriptorChain& chain) const;
    Result<void> add_segment(uint64_t gpa, uint32_t len, uint16_t flags, DescriptorChain& chain) const;
    uint16_t avail_idx() const;
    // Chains the driver has made available that we have not popped yet.
    uint16_t new_chains() const { return static_cast<uint16_t>(avail_idx() - last_avail_); }

    const vmm::GuestMemory* mem_;
    QueueAddresses addr_;
    bool event_idx_;
    uint16_t last_avail_ = 0;
    uint16_t used_idx_ = 0;
    uint16_t signalled_used_ = 0;  // used_idx when we last interrupted
    bool notifications_ = true;
};

// Hands every available chain to `handle` with the driver's kicks suppressed
// while we drain, then re-enables them and re-checks, so no chain added in the
// meantime is missed. `handle` returns false to stop early (e.g. the device's
// backend is full and will call back later; kicks stay off until then). An
// error is a bad chain: the caller fails the device.
template <typename Handle>
Result<void> drain_queue(Virtqueue& vq, Handle&& handle)
{
    vq.disable_notifications();
    for (;;) {
        auto next = vq.pop();
        if (!next) return next.error();
        if (!next.value()) {
            if (vq.enable_notifications()) continue;
            return ok();
        }
        if (!handle(*next.value())) return ok();
    }
}

// Reads and writes the bytes of a chain as one stream, whatever the layout
// of its segments (virtio 1.x makes no promise about framing).
class ChainReader {
public:
    ChainReader(const vmm::GuestMemory& mem, const DescriptorChain& chain) : mem_(mem), chain_(chain) {}
    // Copies the next `out.size()` readable bytes; false if the chain has fewer.
    bool read(std::span<uint8_t> out);
    uint64_t remaining_readable() const;
    // Iovec-like host views of the next `len` readable bytes (for zero-copy I/O).
    bool take_readable(uint64_t len, std::vector<std::span<uint8_t>>& out);

private:
    const vmm::GuestMemory& mem_;
    const DescriptorChain& chain_;
    size_t seg_ = 0;
    uint64_t off_ = 0;
};

class ChainWriter {
public:
    ChainWriter(const vmm::GuestMemory& mem, const DescriptorChain& chain);
    bool write(std::span<const uint8_t> in);
    uint64_t remaining_writable() const;
    bool take_writable(uint64_t len, std::vector<std::span<uint8_t>>& out);
    uint64_t written() const { return written_; }

private:
    const vmm::GuestMemory& mem_;
    const DescriptorChain& chain_;
    size_t seg_ = 0;
    uint64_t off_ = 0;
    uint64_t written_ = 0;
};

namespace vring {
inline constexpr uint16_t kDescNext = 1, kDescWrite = 2, kDescIndirect = 4;
inline constexpr uint16_t kAvailNoInterrupt = 1;
inline constexpr uint16_t kUsedNoNotify = 1;
}  // namespace vring

}  // namespace vvmm::dev
