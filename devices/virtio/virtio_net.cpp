#include "devices/virtio/virtio_net.hpp"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "vmm/base/le.hpp"

namespace vvmm::dev {

VirtioNet::VirtioNet(std::array<uint8_t, 6> mac, std::shared_ptr<net::NetBackend> backend, vmm::IoThread& io)
    : mac_(mac), backend_(std::move(backend)), io_(io)
{
    backend_->attach(this);
}

void VirtioNet::read_config(uint64_t offset, std::span<uint8_t> data) const
{
    uint8_t cfg[10] = {};
    std::memcpy(cfg, mac_.data(), 6);
    store_le<uint16_t>(cfg + 6, 1);  // VIRTIO_NET_S_LINK_UP
    store_le<uint16_t>(cfg + 8, 1);  // one queue pair
    std::memcpy(data.data(), cfg + offset, data.size());
}

void VirtioNet::activate(VirtioQueues& queues)
{
    queues_ = &queues;
    activated_ = true;
    receive_ready_later();
}

void VirtioNet::reset()
{
    queues_ = nullptr;
    pending_tx_.reset();
    rx_refused_ = false;
    held_rx_.clear();
}

void VirtioNet::queue_notify(unsigned q)
{
    if (q == vnet::kTxQueue) {
        transmit();
        return;
    }
    deliver_held();
    if (rx_refused_ && held_rx_.empty()) {
        rx_refused_ = false;
        receive_ready_later();
    }
}

void VirtioNet::receive_ready_later()
{
    // Not under the device lock: the backend may offer a frame right away,
    // and delivering takes that lock.
    io_.post([backend = backend_] { backend->receive_ready(); });
}

void VirtioNet::transmit_ready()
{
    io_.post([this] {
        std::lock_guard lock(this->lock());
        if (activated_) transmit();
    });
}

void VirtioNet::transmit()
{
    Virtqueue* vq = queues_ ? queues_->queue(vnet::kTxQueue) : nullptr;
    if (!vq || queues_->failed() || quiesced_) return;
    bool returned = false;
    // A full backend is a full NIC ring: stop taking frames until it drains
    // (transmit_ready() brings us back; no kick is needed meanwhile).
    auto send_pending = [&] {
        if (!backend_->try_send(pending_tx_->frame)) return false;
        vq->push_used(pending_tx_->head, 0);
        returned = true;
        pending_tx_.reset();
        return true;
    };
    backend_->begin_batch();
    if (!pending_tx_ || send_pending()) {
        auto drained = drain_queue(*vq, [&](const DescriptorChain& chain) {
            const uint64_t len = chain.readable_bytes;
            if (len < vnet::kHeaderSize + vnet::kMinFrame || len > vnet::kHeaderSize + vnet::kMaxFrame) {
                guest_log_.warn("virtio-net: dropped a transmitted frame of " + std::to_string(len) +
                                " bytes (header included)");
                vq->push_used(chain.head, 0);
                returned = true;
                return true;
            }
            std::vector<uint8_t> buf(len);
            ChainReader(queues_->memory(), chain).read(buf);
            buf.erase(buf.begin(), buf.begin() + vnet::kHeaderSize);
            if (!std::equal(mac_.begin(), mac_.end(), buf.begin() + 6)) {
                ++spoofed_tx_dropped_;
                guest_log_.warn("virtio-net: dropped a transmitted frame whose source MAC is not the card's (" +
                                std::to_string(spoofed_tx_dropped_.load()) + " so far)");
                vq->push_used(chain.head, 0);
                returned = true;
                return true;
            }
            pending_tx_ = PendingTx{chain.head, std::move(buf)};
            return send_pending();
        });
        if (!drained) queues_->fail(drained.error().message());
    }
    backend_->end_batch();
    if (returned) queues_->used(vnet::kTxQueue);
}

bool VirtioNet::deliver_to_guest(std::span<const uint8_t> frame)
{
    std::lock_guard lock(this->lock());
    if (!activated_) return false;  // not activated yet: the backend keeps the frame
    if (quiesced_) {
        if (held_rx_.size() >= kMaxHeldFrames) return false;
        held_rx_.emplace_back(frame.begin(), frame.end());
        return true;
    }
    // Frames held across a checkpoint go first, in order.
    deliver_held();
    if (!held_rx_.empty()) return false;
    switch (put_frame(frame)) {
    case Put::delivered: return true;
    case Put::failed: return false;
    case Put::no_buffer:
        // The backend holds the frame until the driver's next RX kick. (RX
        // kicks stay on: suppressing them, as TX does, lost a wake-up in the
        // 3-VM mesh test; see the issue notes.)
        rx_refused_ = true;
        return false;
    }
    return false;
}

void VirtioNet::deliver_held()
{
    while (!held_rx_.empty() && !quiesced_) {
        const Put r = put_frame(held_rx_.front());
        if (r == Put::no_buffer) {
            rx_refused_ = true;
            return;
        }
        if (r == Put::failed) return;
        held_rx_.pop_front();
    }
}

VirtioNet::Put VirtioNet::put_frame(std::span<const uint8_t> frame)
{
    // Not started yet (or being reset): hold the frame, the driver is coming.
    Virtqueue* vq = queues_ ? queues_->queue(vnet::kRxQueue) : nullptr;
    if (!vq) return Put::failed;
    // A broken device will not take frames until the guest resets it; holding
    // them would stall the senders' whole network, so they are dropped.
    if (queues_->failed()) return Put::delivered;
    // No buffer means the driver will kick RX when it posts one (pop() has
    // re-armed the queue and looked again), and held frames go then.
    auto next = vq->pop();
    if (!next) {
        queues_->fail(next.error().message());
        return Put::failed;
    }
    if (!next.value()) return Put::no_buffer;
    const DescriptorChain& chain = *next.value();
    if (chain.writable_bytes < vnet::kHeaderSize + frame.size()) {
        // Without mergeable buffers every RX buffer must hold a whole frame.
        guest_log_.warn("virtio-net: RX buffer of " + std::to_string(chain.writable_bytes) + " bytes is too small for a " +
                        std::to_string(frame.size()) + "-byte frame; frame dropped");
        vq->push_used(chain.head, 0);
        queues_->used(vnet::kRxQueue);
        return Put::delivered;
    }
    uint8_t header[vnet::kHeaderSize] = {};
    store_le<uint16_t>(header + 10, 1);  // num_buffers
    ChainWriter writer(queues_->memory(), chain);
    writer.write(header);
    writer.write(frame);
    vq->push_used(chain.head, static_cast<uint32_t>(writer.written()));
    queues_->used(vnet::kRxQueue);
    return Put::delivered;
}

Result<void> VirtioNet::quiesce()
{
    std::lock_guard lock(this->lock());
    quiesced_ = true;
    return ok();
}

void VirtioNet::unquiesce()
{
    {
        std::lock_guard lock(this->lock());
        quiesced_ = false;
        if (!activated_) return;
        deliver_held();
    }
    // The backend may hold a frame it could not give us meanwhile; a
    // transmit that stopped for the checkpoint resumes with the TX kick the
    // transport sends.
    receive_ready_later();
}

void VirtioNet::report(nlohmann::json& out) const
{
    out["net"] = {{"rx_refused", rx_refused_},  // the next RX kick owes the backend a receive_ready()
                  {"held_rx_frames", held_rx_.size()},
                  {"tx_waiting_for_backend", pending_tx_.has_value()},
                  {"spoofed_tx_dropped", spoofed_tx_dropped_.load()}};
}

void VirtioNet::save_state(StateWriter& out) const
{
    out.boolean(pending_tx_.has_value());
    if (pending_tx_) {
        out.u16(pending_tx_->head);
        out.bytes(pending_tx_->frame);
    }
    out.boolean(rx_refused_);
    out.u32(static_cast<uint32_t>(held_rx_.size()));
    for (const auto& f : held_rx_) out.bytes(f);
}

Result<void> VirtioNet::restore_state(StateReader& in, uint16_t)
{
    quiesced_ = true;
    TRY_ASSIGN(bool has_tx, in.boolean());
    pending_tx_.reset();
    if (has_tx) {
        PendingTx tx;
        TRY_ASSIGN(tx.head, in.u16());
        Virtqueue* vq = queues_ ? queues_->queue(vnet::kTxQueue) : nullptr;
        if (!vq || tx.head >= vq->size()) return in.err("pending TX frame for a queue that is not running");
        TRY_ASSIGN(auto frame, in.bytes(vnet::kMaxFrame));
        // It goes to the backend as it is: only a frame transmit() takes from
        // the guest (an Ethernet frame with this card's MAC as its source).
        if (frame.size() < vnet::kMinFrame || !std::equal(mac_.begin(), mac_.end(), frame.begin() + 6))
            return in.err("pending TX frame of " + std::to_string(frame.size()) +
                          " bytes is not an Ethernet frame from this card's MAC");
        tx.frame.assign(frame.begin(), frame.end());
        pending_tx_ = std::move(tx);
    }
    TRY_ASSIGN(rx_refused_, in.boolean());
    TRY_ASSIGN(uint32_t held, in.u32());
    if (held > kMaxHeldFrames) return in.err(std::to_string(held) + " held frames, at most " + std::to_string(kMaxHeldFrames));
    held_rx_.clear();
    for (uint32_t i = 0; i < held; ++i) {
        TRY_ASSIGN(auto f, in.bytes(vnet::kMaxFrame));
        if (f.size() < vnet::kMinFrame) return in.err("held frame of " + std::to_string(f.size()) + " bytes");
        held_rx_.emplace_back(f.begin(), f.end());
    }
    return ok();
}

}  // namespace vvmm::dev
