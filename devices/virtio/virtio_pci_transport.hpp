// The virtio-pci modern (1.x) transport, shared by every virtio device: PCI
// config space with the virtio capabilities and MSI-X, one memory BAR with
// the common/ISR/device/notify registers and the MSI-X table and PBA, queue
// kicks through ioeventfd and interrupts through irqfd + KVM MSI routing.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "devices/pci/msix.hpp"
#include "devices/pci/pci_bus.hpp"
#include "devices/virtio/virtio_device.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/snapshottable.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/gsi_router.hpp"
#include "vmm/io_bus.hpp"
#include "vmm/io_thread.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::dev {

// BAR 0 layout.
namespace vpci {
inline constexpr uint64_t kCommon = 0x0000, kIsr = 0x1000, kDeviceCfg = 0x2000, kNotify = 0x3000, kMsixTable = 0x4000,
                          kMsixPba = 0x5000, kBarSize = 0x8000;
inline constexpr uint32_t kNotifyMultiplier = 4;
inline constexpr uint16_t kNoVector = 0xffff;
}  // namespace vpci

// The queue sizes the transport takes, from a driver and from a checkpoint
// alike (so a guest cannot make its own checkpoint unrestorable): a power of
// two (vvmm offers split virtqueues only, virtio 1.x 2.7) from 1 to the
// device's maximum. A driver's write of any other size is ignored.
bool valid_queue_size(uint32_t size, uint16_t device_max);

struct VirtioPlatform {
    vmm::KvmVm& vm;
    vmm::GsiRouter& gsi;
    vmm::IoBus& mmio;
    vmm::IoThread& io;
    const vmm::GuestMemory& memory;
};

class VirtioPciTransport : public PciFunction,
                           public VirtioQueues,
                           public vmm::BusDevice,
                           public Snapshottable,
                           public std::enable_shared_from_this<VirtioPciTransport> {
public:
    static Result<std::shared_ptr<VirtioPciTransport>> create(std::shared_ptr<VirtioDevice> device,
                                                              const VirtioPlatform& platform, uint32_t bar_address);
    ~VirtioPciTransport() override;

    // PciFunction
    PciConfigSpace& config() override { return config_; }
    void config_write(size_t offset, size_t size, uint32_t value) override;
    // BusDevice: BAR 0
    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;
    // VirtioQueues
    Virtqueue* queue(unsigned q) override { return q < queues_.size() && queues_[q].vq ? &*queues_[q].vq : nullptr; }
    const vmm::GuestMemory& memory() const override { return platform_.memory; }
    uint64_t features() const override { return driver_features_; }
    void used(unsigned q) override;
    void config_changed() override;
    void fail(const std::string& why) override;
    bool failed() const override { return status_ & virtio::kStatusNeedsReset; }
    vmm::IoThread& io() override { return platform_.io; }

    uint8_t status() const { return status_; }
    // For `vvmm status`: the driver's status and features, and per queue the
    // device's ring positions beside what the rings in guest memory say and
    // its MSI-X vector's state, so a stalled queue shows who waits for whom.
    nlohmann::json report() const;

    // Snapshottable: registers, config space, MSI-X, ring positions, and the
    // device's own state nested inside. A restored transport stays quiesced
    // until unquiesce().
    void set_section_name(std::string name) { section_ = std::move(name); }
    std::string_view section() const override { return section_; }
    uint16_t version() const override { return 1; }
    Result<void> quiesce() override;
    void unquiesce() override;
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;

private:
    struct Queue {
        uint16_t size = 0, msix_vector = vpci::kNoVector;
        bool enabled = false;
        QueueAddresses addr;
        std::optional<Virtqueue> vq;
        UniqueFd kick;  // ioeventfd
    };
    struct Vector {
        UniqueFd irq;  // irqfd
        uint32_t gsi = 0;
    };

    VirtioPciTransport(std::shared_ptr<VirtioDevice> device, const VirtioPlatform& platform);
    Result<void> init(uint32_t bar_address);
    void add_capabilities();
    void relocate_bar();
    uint64_t offered_features() const;

    uint32_t common_read(uint64_t offset, size_t size);
    void common_write(uint64_t offset, size_t size, uint32_t value);
    void write_status(uint8_t status);
    void activate();
    void reset();
    void signal_vector(uint16_t vector, uint8_t isr_bit);

    std::shared_ptr<VirtioDevice> device_;
    VirtioPlatform platform_;
    PciConfigSpace config_;
    std::unique_ptr<Msix> msix_;
    size_t msix_cap_ = 0;
    std::vector<Vector> vectors_;
    std::vector<Queue> queues_;
    // Where BAR 0 is mapped now; changed only under bar_mutex_, never
    // taken while holding mutex_ (see relocate_bar()).
    std::optional<uint64_t> mapped_bar_;
    std::mutex bar_mutex_;
    bool bar_moved_ = false;  // under mutex_: the guest moved BAR 0

    Result<void> restore_locked(StateReader& in, uint16_t version);
    Result<void> restore_queues(StateReader& in);

    std::mutex& mutex_;  // the device's lock (VirtioDevice::lock)
    std::string section_ = "virtio";
    bool quiesced_ = false;  // kicks are left for unquiesce()
    uint32_t device_feature_select_ = 0, driver_feature_select_ = 0;
    uint64_t driver_features_ = 0;
    uint16_t config_msix_vector_ = vpci::kNoVector, queue_select_ = 0;
    uint8_t status_ = 0, config_generation_ = 0, isr_ = 0;
    RateLimitedLog guest_log_;
};

}  // namespace vvmm::dev
