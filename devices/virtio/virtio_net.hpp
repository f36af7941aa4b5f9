// virtio-net: queue 0 receives, queue 1 transmits, frames carried by a
// NetBackend with flow control both ways (see net/net_backend.hpp).
#pragma once

#include <array>
#include <atomic>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "devices/virtio/virtio_device.hpp"
#include "net/net_backend.hpp"
#include "vmm/base/log.hpp"
#include "vmm/io_thread.hpp"

namespace vvmm::dev {

namespace vnet {
inline constexpr uint64_t kFMac = 1ull << 5, kFStatus = 1ull << 16;
inline constexpr size_t kHeaderSize = 12;  // virtio_net_hdr_v1
inline constexpr size_t kMinFrame = 14, kMaxFrame = 65535;
inline constexpr unsigned kRxQueue = 0, kTxQueue = 1;
}  // namespace vnet

class VirtioNet : public VirtioDevice, public net::FrameSink {
public:
    VirtioNet(std::array<uint8_t, 6> mac, std::shared_ptr<net::NetBackend> backend, vmm::IoThread& io);

    uint16_t device_type() const override { return virtio::kDeviceNet; }
    std::string_view name() const override { return "virtio-net"; }
    uint64_t device_features() const override { return vnet::kFMac | vnet::kFStatus; }
    unsigned queue_count() const override { return 2; }
    size_t config_size() const override { return 10; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void activate(VirtioQueues& queues) override;
    void reset() override;
    void queue_notify(unsigned q) override;

    // Checkpoints: while quiesced, frames from the network are held (up to
    // kMaxHeldFrames; beyond that the backend keeps them) and saved with
    // the device; they reach the guest first after unquiesce().
    static constexpr size_t kMaxHeldFrames = 256;
    Result<void> quiesce() override;
    void unquiesce() override;
    void save_state(StateWriter& out) const override;
    Result<void> restore_state(StateReader& in, uint16_t version) override;
    void report(nlohmann::json& out) const override;

    // Transmitted frames whose Ethernet source address is not this card's
    // MAC, dropped: the mesh learns where a MAC lives from the frames'
    // sources, so a guest must not claim another VM's address. (The MAC is
    // fixed: vvmm offers no VIRTIO_NET_F_CTRL_MAC_ADDR.)
    uint64_t spoofed_tx_dropped() const { return spoofed_tx_dropped_; }

    // net::FrameSink (backend thread)
    bool deliver_to_guest(std::span<const uint8_t> frame) override;
    void transmit_ready() override;

private:
    void transmit();  // device lock held
    void receive_ready_later();
    enum class Put { delivered, no_buffer, failed };
    Put put_frame(std::span<const uint8_t> frame);  // device lock held
    void deliver_held();                            // device lock held

    std::array<uint8_t, 6> mac_;
    std::shared_ptr<net::NetBackend> backend_;
    vmm::IoThread& io_;
    VirtioQueues* queues_ = nullptr;
    bool activated_ = false;  // under the device lock: since the first activate(), frames can go to the guest
    // A frame the backend refused, with its chain, sent first when it has room.
    struct PendingTx {
        uint16_t head;
        std::vector<uint8_t> frame;
    };
    std::optional<PendingTx> pending_tx_;
    // We refused a frame for want of RX buffers: the next RX kick must tell
    // the backend. Other RX kicks need not wake it.
    bool rx_refused_ = false;
    std::atomic<bool> quiesced_{false};
    std::deque<std::vector<uint8_t>> held_rx_;
    std::atomic<uint64_t> spoofed_tx_dropped_{0};
    RateLimitedLog guest_log_;
};

}  // namespace vvmm::dev
