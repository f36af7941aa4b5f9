// libFuzzer target: restore() of the virtio-pci transport (over virtio-net
// or virtio-blk) and VirtioNet::restore_state(), fed the state blobs a
// checkpoint holds (user input: a checkpoint directory can come from
// anywhere). The first byte picks the mode:
//  0: a virtio-net transport section;  1: a virtio-blk transport section;
//  2: virtio-net's own device state, restored into a running card.
// A restore must refuse a bad blob with an error. A bug is a crash, a
// sanitizer report, an allocation not bounded by the blob's size, or:
//  - a restored device doing what no device state allows: the card then
//    sends a frame that is not an Ethernet frame or does not carry its own
//    MAC as the source (checked by the fake backend), or a transport that
//    cannot run its queues and interrupts (checked by the fakes);
//  - a restored state that does not save and restore again to the same bytes.
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <filesystem>

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
constexpr uint32_t kBar = 0xC0000000;
constexpr std::array<uint8_t, 6> kMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

vmm::GuestMemory& memory()
{
    static vmm::GuestMemory mem = vmm::GuestMemory::create(kRam).value();
    return mem;
}

const std::string& disk_path()
{
    static const std::string path = [] {
        const std::string p = fuzz::scratch_dir("restore") + "/disk.img";
        UniqueFd f(::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        check(f.valid() && ::ftruncate(f.get(), 64 * 1024) == 0, "creating the disk image");
        return p;
    }();
    return path;
}

// A frame from the network: broadcast, from another MAC.
std::vector<uint8_t> network_frame(size_t len)
{
    std::vector<uint8_t> f(std::max<size_t>(len, 14), 0x5a);
    std::memset(f.data(), 0xff, 6);
    return f;
}

uint32_t reg_read(dev::VirtioPciTransport& t, uint64_t offset, size_t size)
{
    uint8_t b[4] = {};
    t.read(offset, std::span<uint8_t>(b, size));
    return load_le<uint32_t>(b);
}

void reg_write(dev::VirtioPciTransport& t, uint64_t offset, size_t size, uint32_t value)
{
    uint8_t b[4];
    store_le<uint32_t>(b, value);
    t.write(offset, std::span<const uint8_t>(b, size));
}

// The driver posts buffers on queue 0 (virtio-net RX, virtio-blk requests)
// wherever the restored state put its rings: RX buffers of 1526 bytes, or
// one-sector disk reads (through indirect tables).
void post_buffers(dev::VirtioPciTransport& t, bool net, unsigned count)
{
    dev::Virtqueue* vq = t.queue(0);
    if (!vq) return;
    reg_write(t, 0x16, 2, 0);
    auto addr = [&](uint64_t reg) { return uint64_t(reg_read(t, reg, 4)) | uint64_t(reg_read(t, reg + 4, 4)) << 32; };
    const uint64_t desc = addr(0x20), avail = addr(0x28);
    auto idx = memory().span(avail + 2, 2);
    if (!idx) return;
    auto put = [](uint8_t* d, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next) {
        store_le<uint64_t>(d, gpa);
        store_le<uint32_t>(d + 8, len);
        store_le<uint16_t>(d + 12, flags);
        store_le<uint16_t>(d + 14, next);
    };
    uint16_t at = vq->last_avail();
    for (unsigned i = 0; i < count && i < vq->size(); ++i, ++at) {
        const uint16_t head = uint16_t(at % vq->size());
        auto d = memory().span(desc + 16 * uint64_t(head), 16);
        auto slot = memory().span(avail + 4 + 2 * uint64_t(head), 2);
        if (!d || !slot) break;
        const uint64_t buffer = 0x20000 + 0x800 * uint64_t(i % 16);
        if (net) {
            put(d->data(), buffer, 1526, dev::vring::kDescWrite, 0);
        } else {
            uint8_t* table = memory().span(buffer, 48).value().data();
            std::memset(memory().span(buffer + 0x100, 16).value().data(), 0, 16);  // IN, sector 0
            put(table, buffer + 0x100, 16, dev::vring::kDescNext, 1);
            put(table + 16, buffer + 0x200, 512, dev::vring::kDescWrite | dev::vring::kDescNext, 2);
            put(table + 32, buffer + 0x400, 1, dev::vring::kDescWrite, 0);
            put(d->data(), buffer, 48, dev::vring::kDescIndirect, 0);
        }
        store_le<uint16_t>(slot->data(), head);
    }
    store_le<uint16_t>(idx->data(), at);
}

struct Transport {
    std::unique_ptr<vmm::IoThread> io = vmm::IoThread::create().value();
    vmm::IoBus mmio{"MMIO bus"};
    std::shared_ptr<fuzz::FakeNetBackend> backend;
    std::shared_ptr<dev::VirtioDevice> device;
    std::shared_ptr<dev::VirtioPciTransport> t;

    // `vm`: which fake VM (a restore into another machine uses another).
    Transport(bool net, vmm::GsiRouter& gsi, unsigned vm = 0)
    {
        if (net) {
            backend = std::make_shared<fuzz::FakeNetBackend>(kMac);
            device = std::make_shared<dev::VirtioNet>(kMac, backend, *io);
        } else {
            device = dev::VirtioBlk::create(dev::DiskSpec{disk_path(), false, ""}).value();
        }
        t = dev::VirtioPciTransport::create(device, {fuzz::fake_vm(vm), gsi, mmio, *io, memory()}, kBar).value();
    }
    ~Transport()
    {
        fuzz::pump(*io);
        t.reset();
    }
};

// restore(blob) succeeded on `a`: it must save a state that restores to itself.
void check_round_trip(Transport& a, bool net)
{
    StateWriter first;
    check(a.t->save(first).ok(), "save after restore failed");
    vmm::GsiRouter gsi(fuzz::fake_vm(1));
    Transport b(net, gsi, 1);
    StateReader reader(first.data(), "saved again");
    auto r = b.t->restore(reader, b.t->version());
    if (!r) {
        std::fprintf(stderr, "restore: %s\n", r.error().message().c_str());
        fuzz::broken("a restored transport saves a state that does not restore");
    }
    StateWriter second;
    check(b.t->save(second).ok(), "save after restore failed");
    check(second.data() == first.data(), "a restored transport's state changes across save and restore");
    fuzz::pump(*b.io);
}

// The restored transport runs: its queues are kicked, the network offers
// frames, the backend takes what the card sends.
void run(Transport& x, FuzzedDataProvider& in)
{
    if (x.backend) x.backend->chooser = [&in] { return in.ConsumeIntegral<uint8_t>(); };
    fuzz::set_io_chooser([&in] { return in.ConsumeIntegral<uint8_t>(); });
    x.t->unquiesce();
    fuzz::pump(*x.io);
    for (int i = 0; i < 8 && in.remaining_bytes() > 0; ++i) {
        switch (in.ConsumeIntegral<uint8_t>() % 4) {
        case 0:
            reg_write(*x.t, dev::vpci::kNotify + 4 * in.ConsumeIntegralInRange<uint64_t>(0, 1), 2, 0);
            break;
        case 1:
            if (x.backend) (void)x.backend->sink()->deliver_to_guest(network_frame(in.ConsumeIntegralInRange<size_t>(14, 1600)));
            break;
        case 2:
            if (x.backend) x.backend->make_room();
            break;
        case 3: {
            // A read of every register the restored state feeds.
            for (uint64_t off = 0; off < 0x38; off += 2) (void)reg_read(*x.t, off, 2);
            (void)reg_read(*x.t, dev::vpci::kIsr, 1);
            for (uint64_t off = 0; off < 0x30; off += 4) (void)reg_read(*x.t, dev::vpci::kMsixTable + off, 4);
            (void)reg_read(*x.t, dev::vpci::kMsixPba, 4);
            break;
        }
        }
        fuzz::pump(*x.io);
    }
    fuzz::set_io_chooser(nullptr);
    if (x.backend) x.backend->chooser = nullptr;
}

void transport_mode(bool net, std::span<const uint8_t> blob, FuzzedDataProvider& tail)
{
    vmm::GsiRouter gsi(fuzz::fake_vm());
    {
        Transport x(net, gsi);
        StateReader reader(blob, "virtio section");
        if (!x.t->restore(reader, x.t->version())) return;
        // MSI-X vectors are ones a driver can select: one of the table's, or none.
        const unsigned vectors = net ? 3 : 2;
        const uint32_t config_vector = reg_read(*x.t, 0x10, 2);
        check(config_vector < vectors || config_vector == dev::vpci::kNoVector, "restored config MSI-X vector outside the table");
        for (unsigned q = 0; q < vectors - 1; ++q) {
            reg_write(*x.t, 0x16, 2, q);
            const uint32_t v = reg_read(*x.t, 0x1a, 2);
            check(v < vectors || v == dev::vpci::kNoVector, "restored queue MSI-X vector outside the table");
        }
        check_round_trip(x, net);
        fuzz::forget_vm(1);
        post_buffers(*x.t, net, tail.ConsumeIntegralInRange<unsigned>(0, 8));
        run(x, tail);
        // Running it (kicks, frames, completions) must not lead anywhere a checkpoint cannot restore from.
        check(x.t->quiesce().ok(), "quiesce failed");
        check_round_trip(x, net);
        fuzz::forget_vm(1);
    }
    check(fuzz::kvm_record().irqfds.empty(), "irqfds still assigned after the transport is gone");
}

// virtio-net's own state, restored into a card whose queues run: RX at 0x0,
// TX at 0x4000, 16 entries each, RX buffers posted.
struct NetQueues : dev::VirtioQueues {
    std::optional<dev::Virtqueue> rx, tx;
    vmm::IoThread* io_thread = nullptr;
    std::string failure;
    dev::Virtqueue* queue(unsigned q) override
    {
        if (q == dev::vnet::kRxQueue) return rx ? &*rx : nullptr;
        if (q == dev::vnet::kTxQueue) return tx ? &*tx : nullptr;
        return nullptr;
    }
    const vmm::GuestMemory& memory() const override { return ::memory(); }
    uint64_t features() const override { return 0; }
    void used(unsigned q) override { check(queue(q) != nullptr, "used() on a queue that is not running"); }
    void config_changed() override {}
    void fail(const std::string& why) override { failure = why; }
    bool failed() const override { return !failure.empty(); }
    vmm::IoThread& io() override { return *io_thread; }
};

void net_state_mode(std::span<const uint8_t> data)
{
    if (data.size() < 3) return;
    FuzzedDataProvider in(data.data(), 3);
    const uint16_t version = in.ConsumeIntegralInRange<uint16_t>(0, 2);
    const uint8_t rx_buffers = in.ConsumeIntegralInRange<uint8_t>(0, 16);
    const bool running = in.ConsumeIntegral<uint8_t>() < 200;
    const auto blob = data.subspan(3);

    auto all = memory().span(0, kRam).value();
    NetQueues queues;
    if (running) {
        queues.rx.emplace(dev::Virtqueue::create(memory(), {16, 0x0000, 0x1000, 0x2000}, false).value());
        queues.tx.emplace(dev::Virtqueue::create(memory(), {16, 0x4000, 0x5000, 0x6000}, false).value());
        for (uint16_t i = 0; i < rx_buffers; ++i) {
            uint8_t* d = all.data() + 16 * i;
            store_le<uint64_t>(d, 0x8000 + 0x800 * uint64_t(i));
            store_le<uint32_t>(d + 8, i % 3 ? 1526 : 64);
            store_le<uint16_t>(d + 12, dev::vring::kDescWrite);
            store_le<uint16_t>(all.data() + 0x1000 + 4 + 2 * i, i);
        }
        store_le<uint16_t>(all.data() + 0x1000 + 2, rx_buffers);
    }
    auto io = vmm::IoThread::create().value();
    auto backend = std::make_shared<fuzz::FakeNetBackend>(kMac);
    dev::VirtioNet card(kMac, backend, *io);
    queues.io_thread = io.get();
    if (running) {
        std::lock_guard lock(card.lock());
        card.activate(queues);
    }
    StateReader reader(blob, "virtio-net state");
    {
        std::lock_guard lock(card.lock());
        if (!card.restore_state(reader, version)) return;
    }
    const size_t used = blob.size() - reader.remaining();
    StateWriter saved;
    card.save_state(saved);
    check(saved.data().size() == used && std::equal(saved.data().begin(), saved.data().end(), blob.begin()),
          "restored virtio-net state does not save to the bytes it came from");
    card.unquiesce();
    fuzz::pump(*io);
    {
        std::lock_guard lock(card.lock());
        card.queue_notify(dev::vnet::kTxQueue);
        card.queue_notify(dev::vnet::kRxQueue);
    }
    fuzz::pump(*io);
    (void)card.deliver_to_guest(network_frame(60));
    fuzz::pump(*io);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : LogLevel::error);
    (void)disk_path();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    auto all = memory().span(0, kRam).value();
    std::memset(all.data(), 0, all.size());
    fuzz::kvm_record() = {};
    const std::span<const uint8_t> rest(data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
    case 1: {
        // The blob is all of the rest: the run after a successful restore
        // takes its choices from the blob's bytes too (from the end).
        FuzzedDataProvider tail(rest.data(), rest.size());
        transport_mode(data[0] % 3 == 0, rest, tail);
        break;
    }
    default:
        net_state_mode(rest);
        break;
    }
    return 0;
}
