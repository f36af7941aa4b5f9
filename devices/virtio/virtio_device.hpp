// What a virtio device is, independent of its transport: features, config
// space, queues, activate, reset, notify. It knows nothing of PCI.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "devices/virtio/virtqueue.hpp"
#include "vmm/base/state_stream.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/io_thread.hpp"

namespace vvmm::dev {

namespace virtio {
inline constexpr uint64_t kFIndirectDesc = 1ull << 28;
inline constexpr uint64_t kFEventIdx = 1ull << 29;
inline constexpr uint64_t kFVersion1 = 1ull << 32;
inline constexpr uint8_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4, kStatusFeaturesOk = 8,
                         kStatusNeedsReset = 0x40, kStatusFailed = 0x80;
inline constexpr uint16_t kDeviceNet = 1, kDeviceBlock = 2;
}  // namespace virtio

// What an active device gets from its transport.
class VirtioQueues {
public:
    virtual ~VirtioQueues() = default;
    // nullptr if the driver did not enable queue q.
    virtual Virtqueue* queue(unsigned q) = 0;
    virtual const vmm::GuestMemory& memory() const = 0;
    virtual uint64_t features() const = 0;
    // Chains were returned on queue q: interrupt the driver if it wants one.
    virtual void used(unsigned q) = 0;
    virtual void config_changed() = 0;
    // The guest broke the protocol: NEEDS_RESET, one log line, the device stops.
    virtual void fail(const std::string& why) = 0;
    virtual bool failed() const = 0;
    // The VM's I/O thread: the transport watches the queues' kicks on it, and
    // the device runs its own I/O there.
    virtual vmm::IoThread& io() = 0;
};

class VirtioDevice {
public:
    virtual ~VirtioDevice() = default;
    // The device lock: the transport holds it around every call into the
    // device (and guards its own registers with it); the device takes it
    // itself for events from its own threads (I/O completions, frames from
    // the network). The device owns it, so it is there before activate() and
    // after reset().
    std::mutex& lock() const { return lock_; }
    virtual uint16_t device_type() const = 0;
    virtual std::string_view name() const = 0;
    // Device-specific feature bits; the transport adds VERSION_1, EVENT_IDX, INDIRECT_DESC.
    virtual uint64_t device_features() const = 0;
    virtual unsigned queue_count() const = 0;
    virtual uint16_t max_queue_size() const { return 256; }
    virtual size_t config_size() const = 0;
    virtual void read_config(uint64_t offset, std::span<uint8_t> data) const = 0;
    virtual void write_config(uint64_t, std::span<const uint8_t>) {}
    // DRIVER_OK: queues are set up. `queues` stays valid until reset().
    virtual void activate(VirtioQueues& queues) = 0;
    // Back to the initial state; after it returns the device touches no queue.
    virtual void reset() = 0;
    // The driver kicked queue q (I/O thread, device lock held).
    virtual void queue_notify(unsigned q) = 0;

    // Checkpoints. quiesce(): the vCPUs are parked; finish in-flight work
    // and take none from queues or backends until unquiesce(). Called
    // without the device lock (completions may need it).
    virtual Result<void> quiesce() { return ok(); }
    virtual void unquiesce() {}
    // Device state beyond the transport's registers and ring positions
    // (e.g. frames held for the guest). Called with the device lock held;
    // restore_state() runs after activate() when the driver was running.
    virtual uint16_t state_version() const { return 1; }
    virtual void save_state(StateWriter&) const {}
    virtual Result<void> restore_state(StateReader&, uint16_t) { return ok(); }
    // For `vvmm status` (device lock held): the device's own counters and
    // what it holds, added to `out`.
    virtual void report(nlohmann::json& out) const { (void)out; }

private:
    mutable std::mutex lock_;
};

}  // namespace vvmm::dev
