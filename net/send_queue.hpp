// Messages waiting to go to one peer, as encoded bytes, with a byte limit
// that covers both the queued bytes and the batch being written, so memory
// per peer is bounded no matter how slow the peer is. Pure; the mesh guards
// it with its lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace vvmm::net {

class SendQueue {
public:
    static constexpr size_t kDefaultLimit = 256 * 1024;

    explicit SendQueue(size_t limit = kDefaultLimit) : limit_(limit) {}

    size_t limit() const { return limit_; }
    // Queued plus in flight.
    size_t bytes() const { return pending_.size() + in_flight_; }
    bool has_room(size_t message_bytes) const { return bytes() + message_bytes <= limit_; }
    bool has_pending() const { return !pending_.empty(); }

    // Appends one FRAME message. The caller checked has_room().
    void push_frame(std::span<const uint8_t> frame);
    // Appends an already-encoded control message (MARKER, PREPARE...). These
    // may go past the frame limit, since a cut needs its markers, but not
    // past limit() + kControlAllowance: false, and nothing queued, beyond.
    static constexpr size_t kControlAllowance = 256 * 1024;
    bool push_bytes(std::span<const uint8_t> bytes)
    {
        if (this->bytes() + bytes.size() > limit_ + kControlAllowance) return false;
        pending_.insert(pending_.end(), bytes.begin(), bytes.end());
        return true;
    }
    // Moves everything queued into `batch` (whose old contents are dropped);
    // those bytes count as in flight until batch_done().
    void take_batch(std::vector<uint8_t>& batch);
    // The batch was written, or its connection died and it is lost with it.
    void batch_done() { in_flight_ = 0; }

private:
    size_t limit_;
    std::vector<uint8_t> pending_;
    size_t in_flight_ = 0;
};

}  // namespace vvmm::net
