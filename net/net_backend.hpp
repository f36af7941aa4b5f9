// The contract between a virtio-net device and whatever carries its frames
// (the peer mesh, a tap device). Flow control is explicit both ways, so no
// frame is dropped for lack of room and no buffer grows without bound:
//  - guest -> network: try_send() refuses a frame when the backend is full;
//    the device then stops taking frames from its TX queue (like a full NIC
//    ring) until the backend calls FrameSink::transmit_ready().
//  - network -> guest: FrameSink::deliver_to_guest() refuses a frame when the
//    guest has no free RX buffer; the backend keeps that frame, stops reading
//    from the network (so TCP pushes back on the sender) and offers it again
//    after the device calls receive_ready().
#pragma once

#include <cstdint>
#include <span>

#include <nlohmann/json.hpp>

#include "vmm/base/result.hpp"

namespace vvmm::net {

// Implemented by the virtio-net device. Called from the backend's thread.
class FrameSink {
public:
    virtual ~FrameSink() = default;
    // One whole Ethernet frame (no virtio header). Returns false if the guest
    // has no room now; the frame is not consumed.
    virtual bool deliver_to_guest(std::span<const uint8_t> frame) = 0;
    // The backend can take frames again after try_send() returned false.
    virtual void transmit_ready() = 0;
};

// Implemented by backends. try_send() and receive_ready() are called from the
// device's thread (the VMM's I/O thread); implementations are thread-safe.
class NetBackend {
public:
    virtual ~NetBackend() = default;
    // Set once, before start().
    virtual void attach(FrameSink* sink) = 0;
    virtual Result<void> start() = 0;
    // Queue one Ethernet frame from the guest. False: full, nothing queued;
    // retry after FrameSink::transmit_ready().
    virtual bool try_send(std::span<const uint8_t> frame) = 0;
    // The guest posted RX buffers: offer held frames again, resume reading.
    virtual void receive_ready() = 0;
    // Optional batching: between begin_batch() and end_batch() a backend may
    // hold accepted frames and write them together at end_batch() (one
    // system call instead of one per frame). Flow control is unchanged.
    virtual void begin_batch() {}
    virtual void end_batch() {}
    // Stops all threads and connections; no callbacks after it returns.
    virtual void stop() = 0;
    // For `vvmm status`: what the backend holds and waits for (any thread;
    // must not be called with the device's lock held).
    virtual nlohmann::json report() const;
};

inline nlohmann::json NetBackend::report() const { return nlohmann::json::object(); }

}  // namespace vvmm::net
