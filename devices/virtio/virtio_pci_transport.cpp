#include "devices/virtio/virtio_pci_transport.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include <nlohmann/json.hpp>

#include "vmm/base/le.hpp"

namespace vvmm::dev {
namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint8_t kCapCommon = 1, kCapNotify = 2, kCapIsr = 3, kCapDevice = 4;

// Common configuration registers (virtio 1.x, 4.1.4.3).
namespace cc {
constexpr uint64_t kDeviceFeatureSelect = 0x00, kDeviceFeature = 0x04, kDriverFeatureSelect = 0x08,
                   kDriverFeature = 0x0c, kConfigMsixVector = 0x10, kNumQueues = 0x12, kDeviceStatus = 0x14,
                   kConfigGeneration = 0x15, kQueueSelect = 0x16, kQueueSize = 0x18, kQueueMsixVector = 0x1a,
                   kQueueEnable = 0x1c, kQueueNotifyOff = 0x1e, kQueueDesc = 0x20, kQueueDriver = 0x28,
                   kQueueDevice = 0x30, kSize = 0x38;
}

std::pair<uint8_t, uint8_t> pci_class_of(uint16_t device_type)
{
    switch (device_type) {
    case virtio::kDeviceNet: return {0x02, 0x00};    // network controller, ethernet
    case virtio::kDeviceBlock: return {0x01, 0x80};  // mass storage, other
    default: return {0xff, 0x00};
    }
}

std::array<uint8_t, 14> virtio_cap(uint8_t type, uint32_t offset, uint32_t length, uint8_t cap_len)
{
    std::array<uint8_t, 14> b{};
    b[0] = cap_len;
    b[1] = type;
    b[2] = 0;  // BAR 0
    store_le<uint32_t>(&b[6], offset);
    store_le<uint32_t>(&b[10], length);
    return b;
}

Result<UniqueFd> make_eventfd()
{
    UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fd.valid()) return errno_error("eventfd");
    return fd;
}

void kick(int fd)
{
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(fd, &one, sizeof one);
}

}  // namespace

bool valid_queue_size(uint32_t size, uint16_t device_max)
{
    return size != 0 && size <= device_max && size <= Virtqueue::kMaxSize && (size & (size - 1)) == 0;
}

VirtioPciTransport::VirtioPciTransport(std::shared_ptr<VirtioDevice> device, const VirtioPlatform& platform)
    : device_(std::move(device)),
      platform_(platform),
      config_(kVirtioVendor, static_cast<uint16_t>(0x1040 + device_->device_type()),
              pci_class_of(device_->device_type()).first, pci_class_of(device_->device_type()).second, 0),
      mutex_(device_->lock())
{
}

Result<std::shared_ptr<VirtioPciTransport>> VirtioPciTransport::create(std::shared_ptr<VirtioDevice> device,
                                                                       const VirtioPlatform& platform,
                                                                       uint32_t bar_address)
{
    std::shared_ptr<VirtioPciTransport> t(new VirtioPciTransport(std::move(device), platform));
    TRY(t->init(bar_address));
    return t;
}

VirtioPciTransport::~VirtioPciTransport()
{
    for (auto& v : vectors_) (void)platform_.vm.set_irqfd(v.irq.get(), v.gsi, false);
}

Result<void> VirtioPciTransport::init(uint32_t bar_address)
{
    const unsigned nq = device_->queue_count();
    queues_.resize(nq);
    for (auto& q : queues_) q.size = device_->max_queue_size();
    // One vector per queue plus one for configuration changes.
    const unsigned nvec = nq + 1;
    vectors_.resize(nvec);
    for (auto& v : vectors_) {
        TRY_ASSIGN(v.irq, make_eventfd());
        v.gsi = platform_.gsi.allocate_msi_gsi();
    }
    msix_ = std::make_unique<Msix>(
        nvec, [this](unsigned v) { kick(vectors_[v].irq.get()); },
        [this](unsigned v, const vmm::MsiMessage& m) {
            if (auto r = platform_.gsi.set_msi(vectors_[v].gsi, m); !r) guest_log_.warn(r.error().message());
        });
    // Route every vector (masked, to nowhere yet) before binding its irqfd.
    for (unsigned v = 0; v < nvec; ++v) {
        TRY(platform_.gsi.set_msi(vectors_[v].gsi, {}));
        TRY(platform_.vm.set_irqfd(vectors_[v].irq.get(), vectors_[v].gsi, true));
    }
    for (unsigned q = 0; q < nq; ++q) {
        TRY_ASSIGN(queues_[q].kick, make_eventfd());
        platform_.io.watch_eventfd(queues_[q].kick.get(), [this, q] {
            std::lock_guard lock(mutex_);
            if ((status_ & virtio::kStatusDriverOk) && !failed() && !quiesced_ && queues_[q].vq) device_->queue_notify(q);
        });
    }
    store_le<uint16_t>(&config_.bytes()[pci::kSubsystemVendorId], kVirtioVendor);
    store_le<uint16_t>(&config_.bytes()[pci::kSubsystemId], 0x40);
    config_.add_memory_bar(0, vpci::kBarSize);
    add_capabilities();
    config_.set_bar_listener([this](unsigned bar) {
        if (bar == 0) bar_moved_ = true;
    });
    config_.set_bar_address(0, bar_address);
    relocate_bar();
    return ok();
}

void VirtioPciTransport::add_capabilities()
{
    auto common = virtio_cap(kCapCommon, vpci::kCommon, cc::kSize, 16);
    config_.add_capability(pci::kCapVendor, common);
    auto isr = virtio_cap(kCapIsr, vpci::kIsr, 1, 16);
    config_.add_capability(pci::kCapVendor, isr);
    auto dev = virtio_cap(kCapDevice, vpci::kDeviceCfg, static_cast<uint32_t>(std::max<size_t>(device_->config_size(), 4)), 16);
    config_.add_capability(pci::kCapVendor, dev);
    std::array<uint8_t, 18> notify{};
    auto base = virtio_cap(kCapNotify, vpci::kNotify, vpci::kNotifyMultiplier * static_cast<uint32_t>(queues_.size()), 20);
    std::memcpy(notify.data(), base.data(), base.size());
    store_le<uint32_t>(&notify[14], vpci::kNotifyMultiplier);
    config_.add_capability(pci::kCapVendor, notify);

    std::array<uint8_t, 10> msix{}, msix_writable{};
    store_le<uint16_t>(&msix[0], static_cast<uint16_t>(msix_->vectors() - 1));
    store_le<uint32_t>(&msix[2], static_cast<uint32_t>(vpci::kMsixTable));  // BIR 0
    store_le<uint32_t>(&msix[6], static_cast<uint32_t>(vpci::kMsixPba));
    msix_writable[1] = 0xC0;  // enable and function mask
    msix_cap_ = config_.add_capability(pci::kCapMsix, msix, msix_writable);
}

void VirtioPciTransport::config_write(size_t offset, size_t size, uint32_t value)
{
    bool moved = false;
    {
        std::lock_guard lock(mutex_);
        config_.write(offset, size, value);
        const uint16_t control = config_.u16(msix_cap_ + 2);
        msix_->set_control(control & 0x8000, control & 0x4000);
        moved = std::exchange(bar_moved_, false);
    }
    if (moved) relocate_bar();
}

// Called without mutex_: remapping waits for every vCPU to leave the MMIO
// map, and a vCPU inside this BAR may be waiting for mutex_.
void VirtioPciTransport::relocate_bar()
{
    std::lock_guard bar_lock(bar_mutex_);
    std::optional<uint64_t> bar;
    {
        std::lock_guard lock(mutex_);
        bar = config_.bar_address(0);
        bar_moved_ = false;
    }
    if (bar == mapped_bar_) return;
    if (mapped_bar_) {
        platform_.mmio.remove(*mapped_bar_);
        for (unsigned q = 0; q < queues_.size(); ++q)
            (void)platform_.vm.set_ioeventfd(queues_[q].kick.get(), *mapped_bar_ + vpci::kNotify + q * vpci::kNotifyMultiplier, 0, true, false);
    }
    mapped_bar_ = bar;
    if (!bar) return;
    if (auto r = platform_.mmio.add(*bar, vpci::kBarSize, shared_from_this()); !r) {
        guest_log_.warn(std::string(device_->name()) + ": BAR 0 moved onto another device: " + r.error().message());
        mapped_bar_.reset();
        return;
    }
    // Kicks become eventfd signals inside KVM: no exit to vvmm per kick.
    for (unsigned q = 0; q < queues_.size(); ++q)
        if (auto r = platform_.vm.set_ioeventfd(queues_[q].kick.get(), *bar + vpci::kNotify + q * vpci::kNotifyMultiplier, 0, true, true); !r)
            guest_log_.warn(r.error().message());
}

uint64_t VirtioPciTransport::offered_features() const
{
    return device_->device_features() | virtio::kFVersion1 | virtio::kFEventIdx | virtio::kFIndirectDesc;
}

void VirtioPciTransport::read(uint64_t offset, std::span<uint8_t> data)
{
    std::lock_guard lock(mutex_);
    std::fill(data.begin(), data.end(), uint8_t{0});
    if (offset < vpci::kCommon + cc::kSize) {
        const uint32_t v = common_read(offset, data.size());
        for (size_t i = 0; i < data.size() && i < 4; ++i) data[i] = static_cast<uint8_t>(v >> (8 * i));
    } else if (offset == vpci::kIsr) {
        data[0] = isr_;
        isr_ = 0;  // reading ISR acknowledges it
    } else if (offset >= vpci::kDeviceCfg && offset < vpci::kDeviceCfg + device_->config_size()) {
        const uint64_t off = offset - vpci::kDeviceCfg;
        if (off + data.size() <= device_->config_size()) device_->read_config(off, data);
    } else if (offset >= vpci::kMsixTable && offset < vpci::kMsixTable + msix_->table_bytes()) {
        msix_->table_read(offset - vpci::kMsixTable, data);
    } else if (offset >= vpci::kMsixPba && offset < vpci::kMsixPba + msix_->pba_bytes()) {
        msix_->pba_read(offset - vpci::kMsixPba, data);
    }
}

void VirtioPciTransport::write(uint64_t offset, std::span<const uint8_t> data)
{
    std::lock_guard lock(mutex_);
    uint32_t v = 0;
    for (size_t i = 0; i < data.size() && i < 4; ++i) v |= uint32_t(data[i]) << (8 * i);
    if (offset < vpci::kCommon + cc::kSize) {
        common_write(offset, data.size(), v);
    } else if (offset >= vpci::kDeviceCfg && offset < vpci::kDeviceCfg + device_->config_size()) {
        const uint64_t off = offset - vpci::kDeviceCfg;
        if (off + data.size() <= device_->config_size()) device_->write_config(off, data);
    } else if (offset >= vpci::kNotify && offset < vpci::kNotify + vpci::kNotifyMultiplier * queues_.size()) {
        // Only reached if the ioeventfd did not match; hand over to the I/O thread the same way.
        kick(queues_[(offset - vpci::kNotify) / vpci::kNotifyMultiplier].kick.get());
    } else if (offset >= vpci::kMsixTable && offset < vpci::kMsixTable + msix_->table_bytes()) {
        msix_->table_write(offset - vpci::kMsixTable, data);
    }
}

uint32_t VirtioPciTransport::common_read(uint64_t offset, size_t size)
{
    Queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
    const uint64_t features = offered_features();
    auto half = [](uint64_t v, uint64_t off) { return static_cast<uint32_t>(off & 4 ? v >> 32 : v); };
    switch (offset) {
    case cc::kDeviceFeatureSelect: return device_feature_select_;
    case cc::kDeviceFeature: return device_feature_select_ < 2 ? half(features, device_feature_select_ * 4) : 0;
    case cc::kDriverFeatureSelect: return driver_feature_select_;
    case cc::kDriverFeature: return driver_feature_select_ < 2 ? half(driver_features_, driver_feature_select_ * 4) : 0;
    case cc::kConfigMsixVector: return config_msix_vector_;
    case cc::kNumQueues: return static_cast<uint32_t>(queues_.size());
    case cc::kDeviceStatus: return status_;
    case cc::kConfigGeneration: return config_generation_;
    case cc::kQueueSelect: return queue_select_;
    case cc::kQueueSize: return q ? q->size : 0;
    case cc::kQueueMsixVector: return q ? q->msix_vector : vpci::kNoVector;
    case cc::kQueueEnable: return q && q->enabled;
    case cc::kQueueNotifyOff: return queue_select_;
    case cc::kQueueDesc: case cc::kQueueDesc + 4: return q ? half(q->addr.desc, offset - cc::kQueueDesc) : 0;
    case cc::kQueueDriver: case cc::kQueueDriver + 4: return q ? half(q->addr.avail, offset - cc::kQueueDriver) : 0;
    case cc::kQueueDevice: case cc::kQueueDevice + 4: return q ? half(q->addr.used, offset - cc::kQueueDevice) : 0;
    default:
        guest_log_.warn(std::string(device_->name()) + ": unaligned read of common config at " + std::to_string(offset) +
                        " size " + std::to_string(size));
        return 0;
    }
}

void VirtioPciTransport::common_write(uint64_t offset, size_t size, uint32_t value)
{
    Queue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
    // Queue set-up is frozen once the driver said DRIVER_OK.
    const bool queue_writable = q && !(status_ & virtio::kStatusDriverOk);
    auto set_half = [](uint64_t& field, uint64_t off, uint32_t v) {
        field = off & 4 ? (field & 0xffffffffull) | (uint64_t(v) << 32) : (field & ~0xffffffffull) | v;
    };
    auto vector = [&](uint32_t v) { return static_cast<uint16_t>(v < msix_->vectors() ? v : vpci::kNoVector); };
    switch (offset) {
    case cc::kDeviceFeatureSelect: device_feature_select_ = value; break;
    case cc::kDriverFeatureSelect: driver_feature_select_ = value; break;
    case cc::kDriverFeature:
        if (driver_feature_select_ < 2 && !(status_ & virtio::kStatusFeaturesOk))
            set_half(driver_features_, driver_feature_select_ * 4, value);
        break;
    case cc::kConfigMsixVector: config_msix_vector_ = vector(value); break;
    case cc::kDeviceStatus: write_status(static_cast<uint8_t>(value)); break;
    case cc::kQueueSelect: queue_select_ = static_cast<uint16_t>(value); break;
    case cc::kQueueSize:
        if (!queue_writable) break;
        if (valid_queue_size(static_cast<uint16_t>(value), device_->max_queue_size()))
            q->size = static_cast<uint16_t>(value);
        else
            guest_log_.warn(std::string(device_->name()) + ": queue size " + std::to_string(static_cast<uint16_t>(value)) +
                            " ignored (a power of two up to " + std::to_string(device_->max_queue_size()) + ")");
        break;
    case cc::kQueueMsixVector:
        if (q) q->msix_vector = vector(value);
        break;
    case cc::kQueueEnable:
        if (queue_writable && value == 1) q->enabled = true;
        break;
    case cc::kQueueDesc: case cc::kQueueDesc + 4:
        if (queue_writable) set_half(q->addr.desc, offset - cc::kQueueDesc, value);
        break;
    case cc::kQueueDriver: case cc::kQueueDriver + 4:
        if (queue_writable) set_half(q->addr.avail, offset - cc::kQueueDriver, value);
        break;
    case cc::kQueueDevice: case cc::kQueueDevice + 4:
        if (queue_writable) set_half(q->addr.used, offset - cc::kQueueDevice, value);
        break;
    default:
        guest_log_.warn(std::string(device_->name()) + ": ignored write to common config at " + std::to_string(offset) +
                        " size " + std::to_string(size));
    }
}

void VirtioPciTransport::write_status(uint8_t status)
{
    if (status == 0) {
        reset();
        return;
    }
    const uint8_t added = static_cast<uint8_t>(status & ~status_);
    // Only a reset clears status bits (the driver MUST NOT clear one, virtio
    // 1.x 2.1.2): dropping DRIVER_OK or FEATURES_OK would unfreeze the queue
    // set-up and features of a running device, whose registers would then no
    // longer describe its queues (and its checkpoint would not restore).
    if (status_ & ~status)
        guest_log_.warn(std::string(device_->name()) + ": driver tried to clear device status bits " +
                        std::to_string(status_ & ~status) + "; ignored");
    status_ = static_cast<uint8_t>(status_ | status);
    if (added & virtio::kStatusFeaturesOk) {
        const uint64_t offered = offered_features();
        // vvmm speaks only virtio 1.x: a legacy driver cannot set FEATURES_OK.
        if ((driver_features_ & ~offered) || !(driver_features_ & virtio::kFVersion1))
            status_ &= static_cast<uint8_t>(~virtio::kStatusFeaturesOk);
    }
    if ((added & virtio::kStatusDriverOk) && (status_ & virtio::kStatusFeaturesOk)) activate();
}

void VirtioPciTransport::activate()
{
    const bool event_idx = driver_features_ & virtio::kFEventIdx;
    for (unsigned i = 0; i < queues_.size(); ++i) {
        Queue& q = queues_[i];
        if (!q.enabled) continue;
        q.addr.size = q.size;
        auto vq = Virtqueue::create(platform_.memory, q.addr, event_idx);
        if (!vq) {
            fail("queue " + std::to_string(i) + ": " + vq.error().message());
            return;
        }
        q.vq.emplace(std::move(vq).value());
    }
    device_->activate(*this);
    // Buffers the driver posted before DRIVER_OK are not lost.
    for (auto& q : queues_)
        if (q.vq) kick(q.kick.get());
}

void VirtioPciTransport::reset()
{
    device_->reset();
    for (unsigned i = 0; i < queues_.size(); ++i) {
        Queue& q = queues_[i];
        q.vq.reset();
        q.enabled = false;
        q.size = device_->max_queue_size();
        q.msix_vector = vpci::kNoVector;
        q.addr = {};
    }
    status_ = 0;
    driver_features_ = 0;
    device_feature_select_ = driver_feature_select_ = 0;
    config_msix_vector_ = vpci::kNoVector;
    queue_select_ = 0;
    isr_ = 0;
}

void VirtioPciTransport::used(unsigned q)
{
    if (q < queues_.size() && queues_[q].vq && queues_[q].vq->should_notify()) signal_vector(queues_[q].msix_vector, 1);
}

void VirtioPciTransport::config_changed()
{
    ++config_generation_;
    signal_vector(config_msix_vector_, 2);
}

void VirtioPciTransport::signal_vector(uint16_t vector, uint8_t isr_bit)
{
    isr_ |= isr_bit;
    if (msix_->enabled() && vector != vpci::kNoVector) msix_->signal(vector);
    // Without MSI-X the driver polls (vvmm offers no INTx for virtio).
}

void VirtioPciTransport::fail(const std::string& why)
{
    if (!failed()) guest_log_.warn(std::string(device_->name()) + ": device needs reset: " + why);
    status_ |= virtio::kStatusNeedsReset;
    config_changed();
}

Result<void> VirtioPciTransport::quiesce()
{
    {
        std::lock_guard lock(mutex_);
        quiesced_ = true;
    }
    return device_->quiesce();
}

void VirtioPciTransport::unquiesce()
{
    {
        std::lock_guard lock(mutex_);
        quiesced_ = false;
    }
    device_->unquiesce();
    // Kicks that came while quiesced were ignored: look at every queue again.
    for (auto& q : queues_)
        if (q.vq) kick(q.kick.get());
}

nlohmann::json VirtioPciTransport::report() const
{
    std::lock_guard lock(mutex_);
    nlohmann::json queues = nlohmann::json::array();
    for (size_t i = 0; i < queues_.size(); ++i) {
        const Queue& q = queues_[i];
        nlohmann::json j = {{"index", i}, {"size", q.size}, {"enabled", q.enabled}};
        if (q.msix_vector != vpci::kNoVector) {
            j["msix_vector"] = q.msix_vector;
            j["msix_masked"] = msix_->is_masked(q.msix_vector);
            j["msix_pending"] = msix_->pending(q.msix_vector);
        }
        if (q.vq) {
            const auto pos = q.vq->positions();
            const auto ring = q.vq->ring_view();
            j["device"] = {{"last_avail", pos.last_avail}, {"used_idx", pos.used_idx},
                           {"signalled_used", pos.signalled_used}, {"notifications", pos.notifications}};
            j["ring"] = {{"avail_idx", ring.avail_idx}, {"avail_flags", ring.avail_flags}, {"used_idx", ring.used_idx},
                         {"used_flags", ring.used_flags}};
            if (q.vq->event_idx()) {
                j["ring"]["used_event"] = ring.used_event;
                j["ring"]["avail_event"] = ring.avail_event;
            }
        }
        queues.push_back(std::move(j));
    }
    nlohmann::json out = {{"device", std::string(device_->name())},
                          {"section", section_},
                          {"status", status_},
                          {"driver_features", driver_features_},
                          {"msix_enabled", msix_->enabled()},
                          {"quiesced", quiesced_},
                          {"queues", std::move(queues)}};
    device_->report(out);
    return out;
}

Result<void> VirtioPciTransport::save(StateWriter& out) const
{
    std::lock_guard lock(mutex_);
    out.bytes(std::span<const uint8_t>(const_cast<PciConfigSpace&>(config_).bytes()));
    msix_->save(out);
    out.u32(device_feature_select_);
    out.u32(driver_feature_select_);
    out.u64(driver_features_);
    out.u16(config_msix_vector_);
    out.u16(queue_select_);
    out.u8(status_);
    out.u8(config_generation_);
    out.u8(isr_);
    out.u32(static_cast<uint32_t>(queues_.size()));
    for (const auto& q : queues_) {
        out.u16(q.size);
        out.u16(q.msix_vector);
        out.boolean(q.enabled);
        out.u64(q.addr.desc);
        out.u64(q.addr.avail);
        out.u64(q.addr.used);
        out.boolean(q.vq.has_value());
        const auto pos = q.vq ? q.vq->positions() : Virtqueue::Positions{};
        out.u16(pos.last_avail);
        out.u16(pos.used_idx);
        out.u16(pos.signalled_used);
        out.boolean(pos.notifications);
    }
    StateWriter dev;
    device_->save_state(dev);
    out.u16(device_->state_version());
    out.bytes(dev.data());
    return ok();
}

Result<void> VirtioPciTransport::restore(StateReader& in, uint16_t version)
{
    auto restored = restore_locked(in, version);
    // Even a failed restore may have changed the config space: the BAR map follows it.
    relocate_bar();
    return restored;
}

Result<void> VirtioPciTransport::restore_locked(StateReader& in, uint16_t)
{
    std::lock_guard lock(mutex_);
    quiesced_ = true;
    TRY_ASSIGN(auto cfg, in.bytes(256));
    if (auto r = config_.restore_bytes(cfg); !r) return in.err(r.error().message());
    TRY(msix_->restore(in));
    TRY_ASSIGN(device_feature_select_, in.u32());
    TRY_ASSIGN(driver_feature_select_, in.u32());
    TRY_ASSIGN(driver_features_, in.u64());
    TRY_ASSIGN(config_msix_vector_, in.u16());
    TRY_ASSIGN(queue_select_, in.u16());
    TRY_ASSIGN(status_, in.u8());
    TRY_ASSIGN(config_generation_, in.u8());
    TRY_ASSIGN(isr_, in.u8());
    if (config_msix_vector_ != vpci::kNoVector && config_msix_vector_ >= msix_->vectors())
        return in.err("bad config MSI-X vector");
    // Until FEATURES_OK the driver may write any bits (write_status() refuses
    // them then), so only accepted features must be ones this device offers.
    if ((status_ & virtio::kStatusFeaturesOk) && (driver_features_ & ~offered_features()))
        return in.err("driver features this device does not offer");
    TRY(restore_queues(in));
    TRY_ASSIGN(uint16_t dev_version, in.u16());
    TRY_ASSIGN(auto dev_bytes, in.bytes(16u << 20));
    TRY(in.expect_end());
    if (dev_version > device_->state_version())
        return in.err(std::string(device_->name()) + " state version " + std::to_string(dev_version) +
                      " is newer than this vvmm's (" + std::to_string(device_->state_version()) + ")");
    // A device that failed after DRIVER_OK stays activated (and keeps its
    // state, e.g. a pending TX frame) until the driver resets it: so here too.
    if (status_ & virtio::kStatusDriverOk) device_->activate(*this);
    StateReader dev(dev_bytes, std::string(section_) + " device state");
    TRY(device_->restore_state(dev, dev_version));
    return dev.expect_end();
}

Result<void> VirtioPciTransport::restore_queues(StateReader& in)
{
    TRY_ASSIGN(uint32_t nq, in.u32());
    if (nq != queues_.size()) return in.err(std::to_string(nq) + " queues, device has " + std::to_string(queues_.size()));
    const bool event_idx = driver_features_ & virtio::kFEventIdx;
    for (auto& q : queues_) {
        TRY_ASSIGN(q.size, in.u16());
        TRY_ASSIGN(q.msix_vector, in.u16());
        TRY_ASSIGN(q.enabled, in.boolean());
        TRY_ASSIGN(q.addr.desc, in.u64());
        TRY_ASSIGN(q.addr.avail, in.u64());
        TRY_ASSIGN(q.addr.used, in.u64());
        TRY_ASSIGN(bool active, in.boolean());
        Virtqueue::Positions pos;
        TRY_ASSIGN(pos.last_avail, in.u16());
        TRY_ASSIGN(pos.used_idx, in.u16());
        TRY_ASSIGN(pos.signalled_used, in.u16());
        TRY_ASSIGN(pos.notifications, in.boolean());
        if (!valid_queue_size(q.size, device_->max_queue_size()))
            return in.err("queue size " + std::to_string(q.size) + " is not a power of two up to " +
                          std::to_string(device_->max_queue_size()));
        if (q.msix_vector != vpci::kNoVector && q.msix_vector >= msix_->vectors()) return in.err("bad queue MSI-X vector");
        q.vq.reset();
        if (!active) continue;
        q.addr.size = q.size;
        auto vq = Virtqueue::create(platform_.memory, q.addr, event_idx);
        if (!vq) return in.err(vq.error().message());
        q.vq.emplace(std::move(vq).value());
        q.vq->set_positions(pos);
    }
    return ok();
}

}  // namespace vvmm::dev
