#include <doctest/doctest.h>

#include <array>
#include <memory>

#include "devices/pci/msix.hpp"
#include "devices/pci/pci_bus.hpp"
#include "devices/pci/pci_config_space.hpp"
#include "vmm/gsi_router.hpp"

using namespace vvmm::dev;

TEST_CASE("BAR sizing: write all ones, read back the size mask")
{
    PciConfigSpace c(0x1af4, 0x1042, 1, 0x80, 0);
    c.add_memory_bar(0, 0x8000);
    c.write(pci::kBar0, 4, 0xffffffff);
    CHECK(c.read(pci::kBar0, 4) == 0xffff8000);
    c.write(pci::kBar0, 4, 0xC0012345);
    CHECK(c.read(pci::kBar0, 4) == 0xC0010000);
    // Unimplemented BARs read as zero whatever is written.
    c.write(pci::kBar0 + 4, 4, 0xffffffff);
    CHECK(c.read(pci::kBar0 + 4, 4) == 0);
}

TEST_CASE("read-only fields stay read-only; command bits are masked")
{
    PciConfigSpace c(0x1af4, 0x1042, 1, 0x80, 0);
    c.write(pci::kVendorId, 4, 0);
    CHECK(c.u16(pci::kVendorId) == 0x1af4);
    CHECK(c.u16(pci::kDeviceId) == 0x1042);
    c.write(pci::kCommand, 2, 0xffff);
    CHECK(c.u16(pci::kCommand) == (pci::kCommandIo | pci::kCommandMemory | pci::kCommandBusMaster | pci::kCommandIntxDisable));
    c.write(pci::kClass, 1, 0x55);
    CHECK(c.read(pci::kClass, 1) == 1);
}

TEST_CASE("the BAR listener fires when decoding turns on or the BAR moves")
{
    PciConfigSpace c(0x1af4, 0x1042, 1, 0x80, 0);
    c.add_memory_bar(0, 0x1000);
    int calls = 0;
    c.set_bar_listener([&](unsigned bar) { calls += bar == 0; });
    c.set_bar_address(0, 0xC0000000);
    CHECK(calls == 0);  // memory decoding still off
    CHECK_FALSE(c.bar_address(0).has_value());
    c.write(pci::kCommand, 2, pci::kCommandMemory);
    CHECK(calls == 1);
    CHECK(c.bar_address(0).value() == 0xC0000000);
    c.write(pci::kBar0, 4, 0xffffffff);  // sizing: not decoded meanwhile
    CHECK(calls == 2);
    CHECK_FALSE(c.bar_address(0).has_value());
    c.write(pci::kBar0, 4, 0xC0001000);
    CHECK(calls == 3);
    CHECK(c.bar_address(0).value() == 0xC0001000);
}

TEST_CASE("restore takes what the guest could have written, and refuses a changed read-only byte")
{
    auto make = [] {
        auto c = std::make_unique<PciConfigSpace>(0x1af4, 0x1042, 1, 0x80, 0);
        c->add_memory_bar(0, 0x1000);
        const uint8_t body[6] = {7, 0, 1, 2, 3, 4}, writable[6] = {0xff, 0, 0, 0, 0, 0};
        c->add_capability(0x11, body, writable);
        return c;
    };
    auto running = make();
    running->write(pci::kCommand, 2, pci::kCommandMemory | pci::kCommandBusMaster);
    running->write(pci::kBar0, 4, 0xC0002000);
    running->write(pci::kInterruptLine, 1, 9);
    running->write(0x42, 1, 0x5a);  // the capability's writable byte
    std::array<uint8_t, 256> saved = running->bytes();

    auto fresh = make();
    REQUIRE(fresh->restore_bytes(saved).ok());
    CHECK(fresh->bar_address(0).value() == 0xC0002000);
    CHECK(fresh->read(0x42, 1) == 0x5a);

    for (size_t offset : {size_t{pci::kClass}, size_t{0x43}, size_t{pci::kBar0}}) {
        auto forged = saved;
        forged[offset] ^= offset == pci::kBar0 ? 0x08 : 0x01;  // BAR 0's prefetchable bit is read-only
        auto target = make();
        auto r = target->restore_bytes(forged);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message().find("read-only byte") != std::string::npos);
    }
}

TEST_CASE("capability list is linked and flagged in status")
{
    PciConfigSpace c(0x1af4, 0x1042, 1, 0x80, 0);
    const uint8_t a[14] = {16, 1}, b[10] = {};
    const size_t first = c.add_capability(pci::kCapVendor, a);
    const size_t second = c.add_capability(pci::kCapMsix, b);
    CHECK((c.u16(pci::kStatus) & pci::kStatusCapList) != 0);
    CHECK(c.read(pci::kCapabilitiesPtr, 1) == uint32_t(first));
    CHECK(c.read(first, 1) == uint32_t(pci::kCapVendor));
    CHECK(c.read(first + 1, 1) == uint32_t(second));
    CHECK(c.read(second, 1) == uint32_t(pci::kCapMsix));
    CHECK(c.read(second + 1, 1) == 0);
    CHECK(second % 4 == 0);
}

namespace {
struct Fn : PciFunction {
    PciConfigSpace cs{0x1234, 0x5678, 2, 0, 0};
    PciConfigSpace& config() override { return cs; }
};
uint32_t cfg_read(PciBus& bus, unsigned slot, unsigned reg, size_t size = 4)
{
    uint8_t addr[4];
    const uint32_t a = 0x80000000u | (slot << 11) | (reg & 0xfc);
    std::memcpy(addr, &a, 4);
    bus.write(0, addr);
    uint8_t data[4] = {};
    bus.read(4 + (reg & 3), {data, size});
    uint32_t v = 0;
    std::memcpy(&v, data, size);
    return v;
}
}  // namespace

TEST_CASE("conf1: host bridge at slot 0, devices after it, empty slots read all ones")
{
    PciBus bus;
    auto slot = bus.add(std::make_shared<Fn>());
    REQUIRE(slot.ok());
    CHECK(slot.value() == 1);
    CHECK((cfg_read(bus, 0, 0x08) >> 16) == 0x0600u);  // class: host bridge
    CHECK(cfg_read(bus, 1, 0) == 0x56781234);
    CHECK(cfg_read(bus, 1, 2, 2) == 0x5678);                 // sub-dword access at 0xCFE
    CHECK(cfg_read(bus, 7, 0) == 0xffffffff);
    uint8_t latch[4];
    bus.read(0, latch);
    CHECK(latch[3] == 0x80);                                  // the address latch reads back
}

TEST_CASE("MSI-X: masked vectors pend and fire on unmask")
{
    std::vector<unsigned> delivered;
    std::vector<std::pair<unsigned, vvmm::vmm::MsiMessage>> routed;
    Msix m(3, [&](unsigned v) { delivered.push_back(v); }, [&](unsigned v, const vvmm::vmm::MsiMessage& msg) { routed.push_back({v, msg}); });
    CHECK(m.table_bytes() == 48);
    CHECK(m.pba_bytes() == 8);
    // Program vector 1: address 0xFEE00000, data 0x4041, unmasked.
    const uint8_t entry[16] = {0x00, 0x00, 0xE0, 0xFE, 0, 0, 0, 0, 0x41, 0x40, 0, 0, 1, 0, 0, 0};
    m.table_write(16, entry);
    m.signal(1);  // MSI-X not enabled yet: pending
    CHECK(delivered.empty());
    CHECK(m.pending(1));
    uint8_t pba = 0;
    m.pba_read(0, {&pba, 1});
    CHECK(pba == 0x02);
    m.set_control(true, false);  // enabled, but the entry is still masked
    CHECK(delivered.empty());
    const uint8_t unmask[4] = {0, 0, 0, 0};
    m.table_write(16 + 12, unmask);
    REQUIRE(delivered.size() == 1);
    CHECK(delivered[0] == 1);
    CHECK(routed.back().second.address == 0xFEE00000);
    CHECK(routed.back().second.data == 0x4041);
    CHECK_FALSE(m.pending(1));
    m.set_control(true, true);  // function mask
    m.signal(1);
    CHECK(delivered.size() == 1);
    m.set_control(true, false);
    CHECK(delivered.size() == 2);
    m.signal(7);  // no such vector: ignored
    CHECK(delivered.size() == 2);
    uint8_t ctl[4];
    m.table_read(16 + 12, ctl);
    CHECK(ctl[0] == 0);
}

TEST_CASE("MSI-X: routes follow table writes, control changes and restore; signal only delivers")
{
    std::vector<unsigned> delivered;
    std::vector<std::pair<unsigned, vvmm::vmm::MsiMessage>> routed;
    const auto deliver = [&](unsigned v) { delivered.push_back(v); };
    const auto route = [&](unsigned v, const vvmm::vmm::MsiMessage& msg) { routed.push_back({v, msg}); };
    Msix m(2, deliver, route);
    const uint8_t entry[16] = {0x00, 0x00, 0xE0, 0xFE, 0, 0, 0, 0, 0x30, 0, 0, 0, 1, 0, 0, 0};
    m.table_write(0, entry);
    CHECK(routed.empty());  // masked: nothing to route yet
    m.set_control(true, false);
    CHECK(routed.empty());
    const uint8_t unmask[4] = {0, 0, 0, 0};
    m.table_write(12, unmask);
    REQUIRE(routed.size() == 1);
    CHECK(routed[0].first == 0);
    CHECK(routed[0].second.data == 0x30);
    for (int i = 0; i < 100; ++i) m.signal(0);
    CHECK(delivered.size() == 100);
    CHECK(routed.size() == 1);  // no routing work per interrupt
    // A new message while unmasked (Linux masks first; a guest need not) is
    // routed before the vector fires with it.
    const uint8_t data[4] = {0x31, 0, 0, 0};
    m.table_write(8, data);
    REQUIRE(routed.size() == 2);
    CHECK(routed[1].second.data == 0x31);
    m.signal(0);
    CHECK(delivered.size() == 101);
    // Restore routes what can fire in the new VM, and delivers what pended.
    std::vector<uint8_t> saved;
    {
        m.set_control(true, true);
        m.signal(0);
        CHECK(delivered.size() == 101);
        m.set_control(true, false);  // unmasked again: the pending one fires, no new route
        CHECK(delivered.size() == 102);
        CHECK(routed.size() == 2);
        m.set_control(true, true);
        m.signal(0);
        vvmm::StateWriter out;
        m.save(out);
        saved = out.take();
    }
    std::vector<unsigned> delivered2;
    std::vector<std::pair<unsigned, vvmm::vmm::MsiMessage>> routed2;
    Msix r(2, [&](unsigned v) { delivered2.push_back(v); },
           [&](unsigned v, const vvmm::vmm::MsiMessage& msg) { routed2.push_back({v, msg}); });
    vvmm::StateReader in(saved, "msix");
    REQUIRE(r.restore(in));
    CHECK(routed2.empty());  // function-masked: routed when unmasked
    CHECK(r.pending(0));
    r.set_control(true, false);
    REQUIRE(routed2.size() == 1);
    CHECK(routed2[0].second.data == 0x31);
    CHECK(delivered2 == std::vector<unsigned>{0});
}

TEST_CASE("GSI routing keeps KVM's default irqchip routes")
{
    auto t = vvmm::vmm::GsiRouter::table({{24, {0xFEE00000, 0x31}}});
    size_t irqchip = 0, msi = 0;
    for (const auto& e : t) {
        if (e.type == KVM_IRQ_ROUTING_IRQCHIP) ++irqchip;
        if (e.type == KVM_IRQ_ROUTING_MSI) {
            ++msi;
            CHECK(e.gsi == 24);
            CHECK(e.u.msi.address_lo == 0xFEE00000);
            CHECK(e.u.msi.data == 0x31);
        }
    }
    CHECK(irqchip == 16 + 24);
    CHECK(msi == 1);
}

// ---- virtio-pci queue sizes (the guest's writes and checkpoints agree) -------------

#include <unistd.h>

#include <algorithm>
#include <optional>

#include "devices/virtio/virtio_pci_transport.hpp"
#include "vmm/base/le.hpp"
#include "vmm/kvm_system.hpp"

namespace {

struct QuietDevice : VirtioDevice {
    uint16_t device_type() const override { return virtio::kDeviceBlock; }
    std::string_view name() const override { return "quiet"; }
    uint64_t device_features() const override { return 0; }
    unsigned queue_count() const override { return 1; }
    size_t config_size() const override { return 4; }
    void read_config(uint64_t, std::span<uint8_t>) const override {}
    void activate(VirtioQueues&) override {}
    void reset() override {}
    void queue_notify(unsigned) override {}
};

// A transport on a real (never run) KVM VM: it needs irqfds and MSI routes.
struct TransportRig {
    TransportRig(vvmm::vmm::KvmSystem k, vvmm::vmm::KvmVm v, std::unique_ptr<vvmm::vmm::IoThread> i, vvmm::vmm::GuestMemory m)
        : kvm(std::move(k)), vm(std::move(v)), io(std::move(i)), mem(std::move(m))
    {
    }
    vvmm::vmm::KvmSystem kvm;
    vvmm::vmm::KvmVm vm;
    vvmm::vmm::GsiRouter gsi{vm};
    vvmm::vmm::IoBus mmio{"mmio"};
    std::unique_ptr<vvmm::vmm::IoThread> io;
    vvmm::vmm::GuestMemory mem;

    std::shared_ptr<VirtioPciTransport> make()
    {
        auto t = VirtioPciTransport::create(std::make_shared<QuietDevice>(), {vm, gsi, mmio, *io, mem}, 0xC0000000);
        REQUIRE_MESSAGE(t.ok(), (t.ok() ? "" : t.error().message()));
        return t.value();
    }
};

std::optional<TransportRig> transport_rig()
{
    if (::access("/dev/kvm", R_OK | W_OK) != 0) return std::nullopt;
    auto kvm = vvmm::vmm::KvmSystem::open();
    if (!kvm) return std::nullopt;
    auto vm = vvmm::vmm::KvmVm::create(*kvm);
    if (!vm) return std::nullopt;
    return std::optional<TransportRig>(std::in_place, std::move(*kvm), std::move(*vm), vvmm::vmm::IoThread::create().value(),
                                       vvmm::vmm::GuestMemory::create(2 << 20).value());
}

void write16(VirtioPciTransport& t, uint64_t offset, uint16_t v)
{
    uint8_t b[2];
    vvmm::store_le<uint16_t>(b, v);
    t.write(vpci::kCommon + offset, b);
}

uint16_t read16(VirtioPciTransport& t, uint64_t offset)
{
    uint8_t b[2];
    t.read(vpci::kCommon + offset, b);
    return vvmm::load_le<uint16_t>(b);
}

constexpr uint64_t kQueueSelect = 0x16, kQueueSize = 0x18;

}  // namespace

TEST_CASE("virtio queue sizes: powers of two from 1 to the device's maximum")
{
    CHECK(valid_queue_size(1, 256));
    CHECK(valid_queue_size(64, 256));
    CHECK(valid_queue_size(256, 256));
    CHECK_FALSE(valid_queue_size(0, 256));
    CHECK_FALSE(valid_queue_size(512, 256));
    CHECK_FALSE(valid_queue_size(100, 256));
    CHECK_FALSE(valid_queue_size(0x8000, 0xffff));  // beyond what the virtqueue parser takes
}

TEST_CASE("virtio-pci: a guest's bad queue size is ignored, so its checkpoint restores")
{
    auto rig = transport_rig();
    if (!rig) {
        MESSAGE("SKIPPED: no usable /dev/kvm");
        return;
    }
    auto t = rig->make();
    write16(*t, kQueueSelect, 0);
    REQUIRE(read16(*t, kQueueSize) == 256);
    for (uint16_t bad : {512, 100, 0, 0xffff}) {
        write16(*t, kQueueSize, bad);
        CHECK(read16(*t, kQueueSize) == 256);
    }
    write16(*t, kQueueSize, 64);
    CHECK(read16(*t, kQueueSize) == 64);
    uint8_t desc[4];
    vvmm::store_le<uint32_t>(desc, 0xabcde0);  // a mark to find the queue in the saved state
    t->write(vpci::kCommon + 0x20, desc);
    write16(*t, kQueueSize, 1000);  // still ignored after a good one
    CHECK(read16(*t, kQueueSize) == 64);

    // Whatever the guest programmed, the checkpoint of it restores.
    vvmm::StateWriter out;
    REQUIRE(t->save(out).ok());
    auto state = out.take();
    auto other = rig->make();
    vvmm::StateReader in(state, "virtio");
    auto restored = other->restore(in, 1);
    CHECK_MESSAGE(restored.ok(), (restored.ok() ? "" : restored.error().message()));
    write16(*other, kQueueSelect, 0);
    CHECK(read16(*other, kQueueSize) == 64);

    // And a checkpoint with a size the guest could not have set is refused.
    const uint8_t mark[8] = {0xe0, 0xcd, 0xab, 0, 0, 0, 0, 0};
    auto at = std::search(state.begin(), state.end(), std::begin(mark), std::end(mark));
    REQUIRE(at != state.end());
    const size_t size_at = static_cast<size_t>(at - state.begin()) - 5;  // size, MSI-X vector, enabled, desc
    REQUIRE(vvmm::load_le<uint16_t>(&state[size_at]) == 64);
    for (uint16_t bad : {100, 512, 0}) {
        vvmm::store_le<uint16_t>(&state[size_at], bad);
        auto third = rig->make();
        vvmm::StateReader crafted(state, "virtio");
        auto r = third->restore(crafted, 1);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message().find("is not a power of two up to 256") != std::string::npos);
    }
}
