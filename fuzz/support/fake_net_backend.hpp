// Fuzz build only: a NetBackend that takes or refuses frames as the fuzzer
// chooses, and checks that every frame a virtio-net card hands it is one the
// card may send: an Ethernet frame (14..65535 bytes) with the card's own MAC
// as its source.
#pragma once

#include <algorithm>
#include <array>
#include <functional>

#include "fuzz/support/fuzz_platform.hpp"
#include "net/net_backend.hpp"

namespace vvmm::fuzz {

class FakeNetBackend : public net::NetBackend {
public:
    explicit FakeNetBackend(std::array<uint8_t, 6> mac) : mac_(mac) {}

    void attach(net::FrameSink* sink) override { sink_ = sink; }
    Result<void> start() override { return ok(); }
    bool try_send(std::span<const uint8_t> frame) override
    {
        check(frame.size() >= 14 && frame.size() <= 65535, "virtio-net sent a frame that is not an Ethernet frame");
        check(std::equal(mac_.begin(), mac_.end(), frame.begin() + 6), "virtio-net sent a frame with another source MAC");
        if (chooser && (chooser() & 3) == 0) {
            refused_ = true;
            return false;
        }
        ++sent;
        return true;
    }
    void receive_ready() override { ++receive_ready_calls; }
    void stop() override {}

    net::FrameSink* sink() const { return sink_; }
    // After refusing a frame, the backend has room again.
    void make_room()
    {
        if (refused_ && sink_) {
            refused_ = false;
            sink_->transmit_ready();
        }
    }

    std::function<uint8_t()> chooser;  // (byte & 3) == 0: refuse the frame
    size_t sent = 0;
    size_t receive_ready_calls = 0;

private:
    std::array<uint8_t, 6> mac_;
    net::FrameSink* sink_ = nullptr;
    bool refused_ = false;
};

}  // namespace vvmm::fuzz
