// libFuzzer target: the virtio-pci transport and its MSI-X, as a hostile
// guest drives them. The input's first byte picks the device behind the
// transport (virtio-blk over a disk on /dev/shm, or virtio-net over a fake
// backend); the rest is a sequence of operations: BAR reads and writes at
// any offset and size (common config, ISR, device config, notify, MSI-X
// table and PBA, holes), PCI config reads and writes through the conf1
// ports (BAR moves, memory decoding, MSI-X enable and mask), a well-behaved
// driver's set-up (so queues get running), chains posted on the queues,
// kicks, stray writes to guest RAM, frames from the network, and
// checkpoints. KVM and the I/O thread are the fakes of fuzz/support.
// A bug is a crash or sanitizer report, an invariant of the fakes broken
// (see fuzz_platform.hpp, fake_net_backend.hpp), or:
//  - a checkpoint (quiesce + save) of any state the guest reached that does
//    not restore into a fresh transport, or restores to a different state
//    (save after restore must give the same bytes): a guest must not be able
//    to make its own checkpoint unrestorable;
//  - an irqfd still assigned after the transport is destroyed.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <filesystem>

#include "devices/pci/pci_bus.hpp"
#include "devices/virtio/virtio_blk.hpp"
#include "devices/virtio/virtio_net.hpp"
#include "devices/virtio/virtio_pci_transport.hpp"
#include "fuzz/support/fake_net_backend.hpp"
#include "fuzz/support/fuzz_platform.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/log.hpp"

using namespace vvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRam = 256 * 1024;
constexpr uint64_t kDataStart = 0x8000;
constexpr uint32_t kBar = 0xC0000000;
constexpr std::array<uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr int kMaxOps = 96;

vmm::GuestMemory& memory()
{
    static vmm::GuestMemory mem = vmm::GuestMemory::create(kRam).value();
    return mem;
}

const std::string& disk_path()
{
    static const std::string path = [] {
        const std::string p = fuzz::scratch_dir("pci") + "/disk.img";
        UniqueFd f(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        check(f.valid() && ::ftruncate(f.get(), 64 * 1024) == 0, "creating the disk image");
        return p;
    }();
    return path;
}

// Queue q's rings, as the well-behaved driver places them.
uint64_t desc_of(unsigned q) { return 0x4000 * uint64_t(q); }
uint64_t avail_of(unsigned q) { return desc_of(q) + 0x1000; }
uint64_t used_of(unsigned q) { return desc_of(q) + 0x2000; }

struct Device {
    std::shared_ptr<fuzz::FakeNetBackend> backend;
    std::shared_ptr<dev::VirtioDevice> device;
};

Device make_device(bool net, vmm::IoThread& io)
{
    if (net) {
        auto backend = std::make_shared<fuzz::FakeNetBackend>(kMac);
        return {backend, std::make_shared<dev::VirtioNet>(kMac, backend, io)};
    }
    return {nullptr, dev::VirtioBlk::create(dev::DiskSpec{disk_path(), false, ""}).value()};
}

// One VM's worth of virtio-pci: the transport on an MMIO bus and PCI bus 0.
struct Rig {
    FuzzedDataProvider& in;
    bool net;
    vmm::GsiRouter gsi{fuzz::fake_vm()};
    std::unique_ptr<vmm::IoThread> io = vmm::IoThread::create().value();
    vmm::IoBus mmio{"MMIO bus"};
    dev::PciBus pci;
    Device dev = make_device(net, *io);
    std::shared_ptr<dev::VirtioPciTransport> t;
    unsigned slot = 0;
    size_t msix_cap = 0;
    // The driver's view of each queue (set by setup()).
    struct DriverQueue {
        uint16_t size = 0;
        uint16_t avail = 0;
        uint16_t next_desc = 0;
    };
    std::array<DriverQueue, 2> queues{};
    uint64_t next_buffer = kDataStart;

    Rig(FuzzedDataProvider& input, bool is_net) : in(input), net(is_net)
    {
        t = dev::VirtioPciTransport::create(dev.device, {fuzz::fake_vm(), gsi, mmio, *io, memory()}, kBar).value();
        slot = pci.add(t).value();
        for (size_t cap = config_read(dev::pci::kCapabilitiesPtr, 1); cap; cap = config_read(cap + 1, 1))
            if (config_read(cap, 1) == dev::pci::kCapMsix) msix_cap = cap;
        check(msix_cap != 0, "no MSI-X capability");
        if (dev.backend) dev.backend->chooser = [this] { return in.ConsumeIntegral<uint8_t>(); };
    }
    ~Rig()
    {
        if (dev.backend) dev.backend->chooser = nullptr;
        fuzz::pump(*io);
        t.reset();
    }
    unsigned queue_count() const { return net ? 2 : 1; }

    uint32_t config_read(size_t reg, size_t size)
    {
        uint8_t addr[4];
        store_le<uint32_t>(addr, 0x80000000u | (slot << 11) | (reg & 0xfc));
        pci.write(0, addr);
        uint8_t buf[4] = {};
        pci.read(4 + (reg & 3), std::span<uint8_t>(buf, size));
        uint32_t v = 0;
        for (size_t i = 0; i < size; ++i) v |= uint32_t(buf[i]) << (8 * i);
        return v;
    }
    void config_write(size_t reg, size_t size, uint32_t value)
    {
        uint8_t addr[4], buf[4];
        store_le<uint32_t>(addr, 0x80000000u | (slot << 11) | (reg & 0xfc));
        pci.write(0, addr);
        store_le<uint32_t>(buf, value);
        pci.write(4 + (reg & 3), std::span<const uint8_t>(buf, size));
    }
    uint64_t bar() const { return t->config().bar_address(0).value_or(kBar); }
    void bar_write(uint64_t offset, size_t size, uint64_t value)
    {
        uint8_t buf[8];
        store_le<uint64_t>(buf, value);
        mmio.write(bar() + offset, std::span<const uint8_t>(buf, size));
    }
    uint64_t bar_read(uint64_t offset, size_t size)
    {
        uint8_t buf[8] = {};
        mmio.read(bar() + offset, std::span<uint8_t>(buf, size));
        return load_le<uint64_t>(buf);
    }
    void status(uint8_t s) { bar_write(0x14, 1, s); }

    uint64_t any_offset()
    {
        switch (in.ConsumeIntegral<uint8_t>() % 8) {
        case 0: {
            static constexpr uint8_t kRegs[] = {0x00, 0x04, 0x08, 0x0c, 0x10, 0x12, 0x14, 0x15, 0x16, 0x18,
                                                0x1a, 0x1c, 0x1e, 0x20, 0x24, 0x28, 0x2c, 0x30, 0x34};
            return kRegs[in.ConsumeIntegralInRange<size_t>(0, sizeof kRegs - 1)];
        }
        case 1: return in.ConsumeIntegralInRange<uint64_t>(0, 0x3f);
        case 2: return dev::vpci::kIsr + in.ConsumeIntegralInRange<uint64_t>(0, 3);
        case 3: return dev::vpci::kDeviceCfg + in.ConsumeIntegralInRange<uint64_t>(0, 0x1f);
        case 4: return dev::vpci::kNotify + in.ConsumeIntegralInRange<uint64_t>(0, 0xf);
        case 5: return dev::vpci::kMsixTable + in.ConsumeIntegralInRange<uint64_t>(0, 0x3f);
        case 6: return dev::vpci::kMsixPba + in.ConsumeIntegralInRange<uint64_t>(0, 0xf);
        default: return in.ConsumeIntegralInRange<uint64_t>(0, dev::vpci::kBarSize - 1);
        }
    }
    size_t any_size() { return size_t{1} << in.ConsumeIntegralInRange<unsigned>(0, 3); }
    uint64_t any_value()
    {
        switch (in.ConsumeIntegral<uint8_t>() % 4) {
        case 0: return in.ConsumeIntegralInRange<uint64_t>(0, 16);
        case 1: return in.ConsumeIntegralInRange<uint64_t>(0, kRam);
        case 2: return 0xffffffffffffffffull;
        default: return in.ConsumeIntegral<uint64_t>();
        }
    }

    // What a well-behaved driver does, with some of its choices fuzzed.
    void setup()
    {
        config_write(dev::pci::kCommand, 2, dev::pci::kCommandMemory | dev::pci::kCommandBusMaster);
        status(0);
        status(1);
        status(3);
        bar_write(0x00, 4, 0);
        const uint64_t offered_lo = bar_read(0x04, 4);
        bar_write(0x00, 4, 1);
        const uint64_t offered_hi = bar_read(0x04, 4);
        const uint32_t pick = in.ConsumeIntegral<uint32_t>();
        bar_write(0x08, 4, 0);
        bar_write(0x0c, 4, offered_lo & pick);
        bar_write(0x08, 4, 1);
        bar_write(0x0c, 4, offered_hi & (in.ConsumeIntegral<uint8_t>() < 240 ? 1 : 0xffffffff));  // VERSION_1
        status(0x0b);
        for (unsigned q = 0; q < queue_count(); ++q) {
            bar_write(0x16, 2, q);
            const uint16_t size = uint16_t(1u << in.ConsumeIntegralInRange<unsigned>(0, 8));
            bar_write(0x18, 2, size);
            queues[q] = {uint16_t(bar_read(0x18, 2)), 0, 0};
            bar_write(0x1a, 2, in.ConsumeBool() ? q : dev::vpci::kNoVector);
            for (auto [reg, gpa] : {std::pair{0x20, desc_of(q)}, {0x28, avail_of(q)}, {0x30, used_of(q)}}) {
                bar_write(reg, 4, gpa & 0xffffffff);
                bar_write(reg + 4, 4, gpa >> 32);
            }
            if (in.ConsumeIntegral<uint8_t>() < 230) bar_write(0x1c, 2, 1);
        }
        bar_write(0x10, 2, queue_count());
        // MSI-X on, every vector unmasked with some message.
        if (in.ConsumeBool()) {
            config_write(msix_cap + 2, 2, 0x8000);
            for (unsigned v = 0; v <= queue_count(); ++v) {
                bar_write(dev::vpci::kMsixTable + 16 * v, 4, 0xfee00000);
                bar_write(dev::vpci::kMsixTable + 16 * v + 8, 4, 0x40 + v);
                bar_write(dev::vpci::kMsixTable + 16 * v + 12, 4, 0);
            }
        }
        status(0x0f);
    }

    void put_desc(unsigned q, uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        auto d = memory().span(desc_of(q) + 16 * uint64_t(i), 16);
        if (!d) return;
        store_le<uint64_t>(d->data(), gpa);
        store_le<uint32_t>(d->data() + 8, len);
        store_le<uint16_t>(d->data() + 12, flags);
        store_le<uint16_t>(d->data() + 14, next);
    }
    uint64_t buffer(uint32_t len)
    {
        if (next_buffer + len > kRam) next_buffer = kDataStart;
        const uint64_t at = next_buffer;
        next_buffer += (len + 15) & ~15u;
        return at;
    }

    // A chain of the kind the device expects on queue q (mostly well formed).
    void post(unsigned q)
    {
        DriverQueue& dq = queues[q];
        if (dq.size == 0) return;
        struct Seg {
            uint64_t gpa;
            uint32_t len;
            bool writable;
        };
        std::vector<Seg> segs;
        if (!net) {
            static constexpr uint32_t kTypes[] = {dev::blk::kTypeIn, dev::blk::kTypeOut, dev::blk::kTypeFlush,
                                                  dev::blk::kTypeGetId, 99};
            const uint32_t type = kTypes[in.ConsumeIntegralInRange<size_t>(0, 4)];
            const uint64_t hdr = buffer(16);
            store_le<uint32_t>(memory().span(hdr, 4).value().data(), type);
            store_le<uint64_t>(memory().span(hdr + 8, 8).value().data(), in.ConsumeIntegralInRange<uint64_t>(0, 140));
            segs.push_back({hdr, 16, false});
            const uint32_t len = 512 * in.ConsumeIntegralInRange<uint32_t>(0, 8);
            if (len) segs.push_back({buffer(len), len, type != dev::blk::kTypeOut});
            segs.push_back({buffer(1), 1, true});
        } else if (q == dev::vnet::kRxQueue) {
            const uint32_t len = in.ConsumeBool() ? 1526 : in.ConsumeIntegralInRange<uint32_t>(0, 2048);
            segs.push_back({buffer(len), len, true});
        } else {
            const uint32_t frame = in.ConsumeIntegralInRange<uint32_t>(0, 1600);
            const uint64_t at = buffer(12 + frame);
            auto bytes = memory().span(at, 12 + frame).value();
            std::memset(bytes.data(), 0, bytes.size());
            if (frame >= 12) {
                std::memset(bytes.data() + 12, 0xff, 6);
                std::memcpy(bytes.data() + 18, kMac.data(), 6);
                if (in.ConsumeIntegral<uint8_t>() < 16) bytes[18 + 5] ^= 1;  // another source
            }
            const uint32_t split = in.ConsumeIntegralInRange<uint32_t>(0, 12 + frame);
            if (split) segs.push_back({at, split, false});
            if (12 + frame > split) segs.push_back({at + split, 12 + frame - split, false});
        }
        const uint16_t head = dq.next_desc % dq.size;
        for (size_t i = 0; i < segs.size(); ++i) {
            const uint16_t at = uint16_t((dq.next_desc + i) % dq.size);
            const uint16_t next = uint16_t((dq.next_desc + i + 1) % dq.size);
            put_desc(q, at, segs[i].gpa, segs[i].len,
                     uint16_t((segs[i].writable ? dev::vring::kDescWrite : 0) | (i + 1 < segs.size() ? dev::vring::kDescNext : 0)),
                     next);
        }
        dq.next_desc = uint16_t(dq.next_desc + segs.size());
        store_le<uint16_t>(memory().span(avail_of(q) + 4 + 2 * uint64_t(dq.avail % dq.size), 2).value().data(), head);
        ++dq.avail;
        store_le<uint16_t>(memory().span(avail_of(q) + 2, 2).value().data(), dq.avail);
    }

    // quiesce + save; the state must restore into a fresh transport and save the same again.
    void checkpoint()
    {
        fuzz::pump(*io);  // in-flight disk requests complete (a real quiesce waits for them)
        check(t->quiesce().ok(), "quiesce failed");
        StateWriter saved;
        check(t->save(saved).ok(), "save failed");
        {
            // Another machine: its own VM, interrupt routes, buses and I/O thread.
            vmm::GsiRouter gsi2(fuzz::fake_vm(1));
            auto io2 = vmm::IoThread::create().value();
            vmm::IoBus mmio2("MMIO bus (restored)");
            Device dev2 = make_device(net, *io2);
            auto t2 = dev::VirtioPciTransport::create(dev2.device, {fuzz::fake_vm(1), gsi2, mmio2, *io2, memory()}, kBar).value();
            StateReader reader(saved.data(), "virtio section");
            auto restored = t2->restore(reader, t2->version());
            if (!restored) {
                std::fprintf(stderr, "restore: %s\n", restored.error().message().c_str());
                fuzz::broken("the checkpoint of a state the guest reached does not restore");
            }
            StateWriter again;
            check(t2->save(again).ok(), "save after restore failed");
            check(again.data() == saved.data(), "a restored transport saves a different state");
            t2->unquiesce();
            fuzz::pump(*io2);
        }
        fuzz::forget_vm(1);
        t->unquiesce();
    }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : LogLevel::error);
    fuzz::set_io_check([](fuzz::IoKind kind, int, const iovec* iov, unsigned count, uint64_t) {
        if (kind == fuzz::IoKind::fsync) return;
        const uint8_t* lo = memory().host_base();
        for (unsigned i = 0; i < count; ++i) {
            const auto* b = static_cast<const uint8_t*>(iov[i].iov_base);
            check(b >= lo && b <= lo + kRam && iov[i].iov_len <= size_t(lo + kRam - b), "disk I/O buffer outside guest RAM");
        }
    });
    (void)disk_path();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    FuzzedDataProvider in(data + 1, size - 1);
    auto all = memory().span(0, kRam).value();
    std::memset(all.data(), 0, all.size());
    fuzz::kvm_record() = {};
    {
        Rig rig(in, data[0] & 1);
        fuzz::set_io_chooser([&in] { return in.ConsumeIntegral<uint8_t>(); });
        for (int op = 0; op < kMaxOps && in.remaining_bytes() > 0; ++op) {
            switch (in.ConsumeIntegral<uint8_t>() % 16) {
            case 0: case 1: {
                const uint64_t off = rig.any_offset();
                (void)rig.bar_read(off, rig.any_size());
                break;
            }
            case 2: case 3: case 4: {
                const uint64_t off = rig.any_offset();
                const size_t sz = rig.any_size();
                rig.bar_write(off, sz, rig.any_value());
                break;
            }
            case 5: {
                const size_t reg = in.ConsumeIntegralInRange<size_t>(0, 255);
                (void)rig.config_read(reg, size_t{1} << in.ConsumeIntegralInRange<unsigned>(0, 2));
                break;
            }
            case 6: {
                const size_t reg = in.ConsumeBool() ? in.ConsumeIntegralInRange<size_t>(0, 255)
                                                    : (in.ConsumeBool() ? dev::pci::kCommand : rig.msix_cap + 2);
                const size_t sz = size_t{1} << in.ConsumeIntegralInRange<unsigned>(0, 2);
                rig.config_write(reg, sz, in.ConsumeIntegral<uint32_t>());
                break;
            }
            case 7:
                rig.setup();
                break;
            case 8: case 9: case 10:
                rig.post(in.ConsumeIntegralInRange<unsigned>(0, rig.queue_count() - 1));
                break;
            case 11:  // kick through the BAR (the ioeventfd path is the same eventfd)
                rig.bar_write(dev::vpci::kNotify + 4 * in.ConsumeIntegralInRange<uint64_t>(0, rig.queue_count() - 1), 2, 0);
                fuzz::pump(*rig.io, in.ConsumeIntegralInRange<size_t>(0, 4));
                break;
            case 12:
                fuzz::pump(*rig.io, in.ConsumeIntegralInRange<size_t>(0, 8));
                break;
            case 13:
                if (rig.net) {  // the network side: a frame for the guest, or room to send again
                    if (in.ConsumeBool()) {
                        auto frame = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(14, 1514));
                        frame.resize(std::max<size_t>(frame.size(), 14));
                        (void)rig.dev.backend->sink()->deliver_to_guest(frame);
                    } else {
                        rig.dev.backend->make_room();
                    }
                } else {
                    fuzz::pump(*rig.io);
                }
                break;
            case 14:
                rig.checkpoint();
                break;
            case 15: {  // the guest writes anywhere, rings included
                const uint64_t at = in.ConsumeIntegralInRange<uint64_t>(0, kRam - 1);
                const auto bytes = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 16));
                if (!bytes.empty()) std::memcpy(all.data() + at, bytes.data(), std::min<size_t>(bytes.size(), kRam - at));
                break;
            }
            }
        }
        fuzz::set_io_chooser(nullptr);
        rig.checkpoint();
    }
    check(fuzz::kvm_record().irqfds.empty(), "irqfds still assigned after the transport is gone");
    return 0;
}
