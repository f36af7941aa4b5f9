// virtio-blk over a raw image file: requests run on the I/O thread's
// io_uring, several in flight, completing in any order.
#pragma once

#include <memory>
#include <sys/uio.h>
#include <vector>

#include "devices/disk_image.hpp"
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
    static Result<std::shared_ptr<VirtioBlk>> create(const DiskSpec& spec, vmm::IoThread& io);

    uint16_t device_type() const override { return virtio::kDeviceBlock; }
    std::string_view name() const override { return name_; }
    uint64_t device_features() const override;
    unsigned queue_count() const override { return 1; }
    size_t config_size() const override { return 24; }
    void read_config(uint64_t offset, std::span<uint8_t> data) const override;
    void activate(VirtioQueues& queues) override;
    void reset() override;
    void queue_notify(unsigned q) override;

    size_t in_flight() const { return in_flight_; }

private:
    struct Request;
    VirtioBlk(DiskImage disk, DiskSpec spec, vmm::IoThread& io);
    void start(const DescriptorChain& chain);
    void complete(const std::shared_ptr<Request>& r, uint8_t status);

    DiskImage disk_;
    DiskSpec spec_;
    std::string name_;
    vmm::IoThread& io_;
    VirtioQueues* queues_ = nullptr;
    std::mutex* device_lock_ = nullptr;  // the transport's; outlives every request
    uint64_t generation_ = 0;  // bumped by reset(): stale completions are dropped
    size_t in_flight_ = 0;
};

}  // namespace vvmm::dev
