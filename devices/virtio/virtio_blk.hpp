// virtio-blk over a disk layer chain (devices/disk_layers.hpp): requests run
// on the I/O thread's io_uring, several in flight, completing in any order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <memory>
#include <sys/uio.h>
#include <vector>

#include "devices/disk_image.hpp"
#include "devices/disk_layers.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/io_thread.hpp"

namespace vvmm::dev {

namespace blk {
inline constexpr uint32_t kTypeIn = 0, kTypeOut = 1, kTypeFlush = 4, kTypeGetId = 8;
inline constexpr uint8_t kStatusOk = 0, kStatusIoErr = 1, kStatusUnsupported = 2;
inline constexpr uint64_t kSectorSize = 512;
inline constexpr uint64_t kFSegMax = 1ull << 2, kFRo = 1ull << 5, kFBlkSize = 1ull << 6, kFFlush = 1ull << 9;
inline constexpr size_t kIdBytes = 20;
}  // namespace blk

// The parsed form of one request chain (pure, unit-tested).
struct BlockRequest {
    uint32_t type = 0;
    uint64_t sector = 0;
    uint64_t data_len = 0;  // bytes to transfer (IN: writable, OUT: readable)
};
// Reads the header and checks the chain's shape. An error means the driver
// broke the protocol (the device goes NEEDS_RESET); a request the device
// must answer with IOERR (bad sector range, read-only disk) is not an error.
Result<BlockRequest> parse_block_request(const vmm::GuestMemory& mem, const DescriptorChain& chain);

class VirtioBlk : public VirtioDevice {
public:
    static Result<std::shared_ptr<VirtioBlk>> create(const DiskSpec& spec);
    // Over a chain opened elsewhere (a restore: DiskChain::open(description, dir)).
    static std::shared_ptr<VirtioBlk> create(DiskChain disk);

    uint16_t device_type() const override { return virtio::kDeviceBlock; }
    std::string_view name() const override { return name_; }
    uint64_t device_features() const override;
    unsigned queue_count() const override { return 1; }
    size_t config_size() const override { return 24; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void activate(VirtioQueues& queues) override;
    void reset() override;
    void queue_notify(unsigned q) override;

    // Checkpoint quiesce, from any thread but the I/O thread, with the vCPUs
    // parked: stop taking requests from the queue and wait until every
    // request in flight has completed (its data and status are in guest
    // memory). On timeout an error; call undrain() in every case afterwards.
    Result<void> drain(std::chrono::milliseconds timeout = std::chrono::seconds(30));
    // Take requests again (the ones the guest queued meanwhile are picked up).
    void undrain();
    Result<void> quiesce() override { return drain(); }
    void unquiesce() override { undrain(); }
    // Between drain() and undrain(): freeze the disk chain (DiskChain::freeze).
    Result<ChainDescription> freeze(const std::string& overlay_dir);
    const DiskChain& disk() const { return disk_; }
    size_t in_flight() const { return in_flight_; }
    void report(nlohmann::json& out) const override;

private:
    struct Request;
    explicit VirtioBlk(DiskChain disk);
    void start(const DescriptorChain& chain);
    void finish_io(const std::shared_ptr<Request>& r);
    void complete(const std::shared_ptr<Request>& r, uint8_t status);

    DiskChain disk_;
    std::string name_;
    VirtioQueues* queues_ = nullptr;
    // The transport's I/O thread, from the first activate() on; it outlives
    // every request.
    vmm::IoThread* io_ = nullptr;
    uint64_t generation_ = 0;  // bumped by reset(): stale completions are dropped
    // Requests whose I/O the kernel still runs (and may still write guest
    // memory), across resets too. Guarded by the device lock.
    size_t in_flight_ = 0;
    bool draining_ = false;
    bool kicked_while_draining_ = false;
    std::condition_variable idle_;  // in_flight_ reached 0
};

}  // namespace vvmm::dev
