#include "net/send_queue.hpp"

#include "net/peer_protocol.hpp"

namespace vvmm::net {

void SendQueue::push_frame(std::span<const uint8_t> frame) { append_frame(pending_, frame); }

void SendQueue::take_batch(std::vector<uint8_t>& batch)
{
    batch.clear();
    // Swapping keeps both buffers' capacity: no allocation in steady state,
    // and never more than two buffers of at most `limit_` bytes each.
    batch.swap(pending_);
    in_flight_ = batch.size();
}

}  // namespace vvmm::net
