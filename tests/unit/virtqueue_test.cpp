#include <doctest/doctest.h>

#include <array>
#include <cstring>
#include <memory>

#include "devices/virtio/virtqueue.hpp"
#include "vmm/base/le.hpp"

using namespace vvmm;
using namespace vvmm::dev;

namespace {

// A queue of 8 in 1 MiB of real (memfd) guest memory.
struct Ring {
    vmm::GuestMemory mem = vmm::GuestMemory::create(1 << 20).value();
    QueueAddresses addr{8, 0x1000, 0x2000, 0x3000};
    uint16_t avail = 0;

    uint8_t* at(uint64_t gpa, uint64_t len = 1) { return mem.span(gpa, len).value().data(); }
    void desc(uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next, uint64_t table = 0x1000)
    {
        uint8_t* d = at(table + 16 * i, 16);
        store_le(d, gpa);
        store_le(d + 8, len);
        store_le(d + 12, flags);
        store_le(d + 14, next);
    }
    void post(uint16_t head)
    {
        store_le<uint16_t>(at(addr.avail + 4 + 2 * (avail % addr.size), 2), head);
        ++avail;
        store_le<uint16_t>(at(addr.avail + 2, 2), avail);
    }
    Virtqueue queue(bool event_idx = false) { return Virtqueue::create(mem, addr, event_idx).value(); }
    uint16_t used_idx() { return load_le<uint16_t>(at(addr.used + 2, 2)); }
};

std::string pop_error(Ring& r)
{
    auto q = r.queue();
    auto c = q.pop();
    return c.ok() ? "" : c.error().message();
}

}  // namespace

TEST_CASE("a direct chain: readable then writable segments")
{
    Ring r;
    r.desc(0, 0x10000, 16, vring::kDescNext, 1);
    r.desc(1, 0x11000, 512, vring::kDescNext | vring::kDescWrite, 2);
    r.desc(2, 0x12000, 1, vring::kDescWrite, 0);
    r.post(0);
    auto q = r.queue();
    CHECK(q.has_available());
    auto c = q.pop();
    REQUIRE(c.ok());
    REQUIRE(c.value().has_value());
    const auto& chain = *c.value();
    CHECK(chain.head == 0);
    REQUIRE(chain.segments.size() == 3);
    CHECK(chain.readable_bytes == 16);
    CHECK(chain.writable_bytes == 513);
    CHECK_FALSE(q.has_available());
    CHECK_FALSE(q.pop().value().has_value());
    q.push_used(0, 513);
    CHECK(r.used_idx() == 1);
    CHECK(load_le<uint32_t>(r.at(r.addr.used + 4, 4)) == 0);
    CHECK(load_le<uint32_t>(r.at(r.addr.used + 8, 4)) == 513);
}

TEST_CASE("an indirect chain")
{
    Ring r;
    const uint64_t table = 0x20000;
    r.desc(0, 0x10000, 16, vring::kDescNext, 1, table);
    r.desc(1, 0x11000, 4096, vring::kDescNext | vring::kDescWrite, 2, table);
    r.desc(2, 0x12000, 1, vring::kDescWrite, 0, table);
    r.desc(5, table, 3 * 16, vring::kDescIndirect, 0);
    r.post(5);
    auto q = r.queue();
    auto c = q.pop();
    REQUIRE(c.ok());
    CHECK(c.value()->head == 5);
    CHECK(c.value()->segments.size() == 3);
    CHECK(c.value()->writable_bytes == 4097);
}

TEST_CASE("bad chains are errors, never crashes")
{
    Ring r;
    SUBCASE("head beyond the queue") {
        r.post(8);
        CHECK(pop_error(r).find("beyond the queue") != std::string::npos);
    }
    SUBCASE("next beyond the queue") {
        r.desc(0, 0x10000, 16, vring::kDescNext, 200);
        r.post(0);
        CHECK(pop_error(r).find("beyond the queue") != std::string::npos);
    }
    SUBCASE("a loop") {
        r.desc(0, 0x10000, 16, vring::kDescNext, 1);
        r.desc(1, 0x10000, 16, vring::kDescNext, 0);
        r.post(0);
        CHECK(pop_error(r).find("loops") != std::string::npos);
    }
    SUBCASE("a self loop") {
        r.desc(3, 0x10000, 16, vring::kDescNext, 3);
        r.post(3);
        CHECK(pop_error(r).find("loops") != std::string::npos);
    }
    SUBCASE("buffer outside RAM") {
        r.desc(0, 0xFFFFF000, 16, 0, 0);
        r.post(0);
        CHECK(pop_error(r).find("outside RAM") != std::string::npos);
    }
    SUBCASE("buffer straddling the end of RAM") {
        r.desc(0, (1 << 20) - 8, 16, 0, 0);
        r.post(0);
        CHECK(pop_error(r).find("outside RAM") != std::string::npos);
    }
    SUBCASE("address + length overflows") {
        r.desc(0, ~0ull - 4, 0x100, 0, 0);
        r.post(0);
        CHECK(pop_error(r).find("outside RAM") != std::string::npos);
    }
    SUBCASE("readable after writable") {
        r.desc(0, 0x10000, 16, vring::kDescNext | vring::kDescWrite, 1);
        r.desc(1, 0x11000, 16, 0, 0);
        r.post(0);
        CHECK(pop_error(r).find("readable descriptor after a writable") != std::string::npos);
    }
    SUBCASE("indirect with NEXT") {
        r.desc(0, 0x20000, 32, vring::kDescIndirect | vring::kDescNext, 1);
        r.post(0);
        CHECK(pop_error(r).find("NEXT") != std::string::npos);
    }
    SUBCASE("indirect table length not a multiple of 16") {
        r.desc(0, 0x20000, 24, vring::kDescIndirect, 0);
        r.post(0);
        CHECK(pop_error(r).find("multiple of 16") != std::string::npos);
    }
    SUBCASE("indirect table outside RAM") {
        r.desc(0, 0x7FFFFFFF0000, 32, vring::kDescIndirect, 0);
        r.post(0);
        CHECK(pop_error(r).find("outside RAM") != std::string::npos);
    }
    SUBCASE("nested indirect") {
        r.desc(0, 0x20000, 16, vring::kDescIndirect, 0);
        r.desc(0, 0x30000, 16, vring::kDescIndirect, 0, 0x20000);
        r.post(0);
        CHECK(pop_error(r).find("nested") != std::string::npos);
    }
    SUBCASE("indirect loop") {
        r.desc(0, 0x20000, 32, vring::kDescIndirect, 0);
        r.desc(0, 0x10000, 8, vring::kDescNext, 1, 0x20000);
        r.desc(1, 0x10000, 8, vring::kDescNext, 0, 0x20000);
        r.post(0);
        CHECK(pop_error(r).find("loops") != std::string::npos);
    }
    SUBCASE("indirect link beyond its table") {
        r.desc(0, 0x20000, 32, vring::kDescIndirect, 0);
        r.desc(0, 0x10000, 8, vring::kDescNext, 7, 0x20000);
        r.post(0);
        CHECK(pop_error(r).find("beyond its table") != std::string::npos);
    }
    SUBCASE("indirect inside a chain") {
        r.desc(0, 0x10000, 8, vring::kDescNext, 1);
        r.desc(1, 0x20000, 16, vring::kDescIndirect, 0);
        r.post(0);
        CHECK(pop_error(r).find("inside a chain") != std::string::npos);
    }
    SUBCASE("driver claims more buffers than the queue holds") {
        store_le<uint16_t>(r.at(r.addr.avail + 2, 2), 100);
        CHECK(pop_error(r).find("new buffers") != std::string::npos);
    }
}

TEST_CASE("bad queue layouts are refused at set-up")
{
    auto mem = vmm::GuestMemory::create(1 << 20).value();
    CHECK_FALSE(Virtqueue::create(mem, {6, 0x1000, 0x2000, 0x3000}, false).ok());     // not a power of two
    CHECK_FALSE(Virtqueue::create(mem, {0, 0x1000, 0x2000, 0x3000}, false).ok());
    CHECK_FALSE(Virtqueue::create(mem, {2048, 0x1000, 0x2000, 0x3000}, false).ok());  // too big
    CHECK_FALSE(Virtqueue::create(mem, {8, 0x1008, 0x2000, 0x3000}, false).ok());     // misaligned
    CHECK_FALSE(Virtqueue::create(mem, {8, 0x1000, 0x2000, 0xFFFFF}, false).ok());
    CHECK_FALSE(Virtqueue::create(mem, {256, 0xFF800, 0x2000, 0x3000}, false).ok());  // table runs off RAM
    CHECK(Virtqueue::create(mem, {256, 0x1000, 0x2000, 0x3000}, true).ok());
}

TEST_CASE("notification suppression: flags and event index")
{
    Ring r;
    for (uint16_t i = 0; i < 4; ++i) r.desc(i, 0x10000, 8, 0, 0);
    SUBCASE("NO_INTERRUPT flag") {
        auto q = r.queue();
        r.post(0);
        q.pop().value();
        q.push_used(0, 0);
        CHECK(q.should_notify());
        CHECK_FALSE(q.should_notify());  // nothing new
        store_le<uint16_t>(r.at(r.addr.avail, 2), vring::kAvailNoInterrupt);
        r.post(1);
        q.pop().value();
        q.push_used(1, 0);
        CHECK_FALSE(q.should_notify());
    }
    SUBCASE("used_event") {
        auto q = r.queue(true);
        // The driver wants an interrupt once used_idx passes 2.
        store_le<uint16_t>(r.at(r.addr.avail + 4 + 2 * 8, 2), 2);
        for (uint16_t i = 0; i < 2; ++i) {
            r.post(i);
            q.pop().value();
            q.push_used(i, 0);
            CHECK_FALSE(q.should_notify());
        }
        r.post(2);
        q.pop().value();
        q.push_used(2, 0);
        CHECK(q.should_notify());
        // And pop() published avail_event for the driver.
        CHECK(load_le<uint16_t>(r.at(r.addr.used + 4 + 8 * 8, 2)) == 3);
    }
}

TEST_CASE("chain reader and writer see the chain as one byte stream")
{
    Ring r;
    r.desc(0, 0x10000, 3, vring::kDescNext, 1);
    r.desc(1, 0x11000, 5, vring::kDescNext, 2);
    r.desc(2, 0x12000, 4, vring::kDescNext | vring::kDescWrite, 3);
    r.desc(3, 0x13000, 4, vring::kDescWrite, 0);
    std::memcpy(r.at(0x10000, 3), "abc", 3);
    std::memcpy(r.at(0x11000, 5), "defgh", 5);
    r.post(0);
    auto q = r.queue();
    auto chain = *q.pop().value();
    ChainReader reader(r.mem, chain);
    uint8_t buf[6];
    REQUIRE(reader.read(buf));
    CHECK(std::string(buf, buf + 6) == "abcdef");
    CHECK(reader.remaining_readable() == 2);
    CHECK_FALSE(reader.read(buf));
    ChainWriter writer(r.mem, chain);
    const uint8_t out[] = {'1', '2', '3', '4', '5', '6'};
    REQUIRE(writer.write(out));
    CHECK(std::string(reinterpret_cast<char*>(r.at(0x12000, 4)), 4) == "1234");
    CHECK(std::string(reinterpret_cast<char*>(r.at(0x13000, 2)), 2) == "56");
    CHECK(writer.remaining_writable() == 2);
    CHECK_FALSE(writer.write(out));
}

TEST_CASE("kick suppression: NO_NOTIFY flag or avail_event, and the re-check on enable")
{
    Ring r;
    for (uint16_t i = 0; i < 4; ++i) r.desc(i, 0x10000, 8, 0, 0);
    SUBCASE("flags") {
        auto q = r.queue();
        q.disable_notifications();
        CHECK(load_le<uint16_t>(r.at(r.addr.used, 2)) == vring::kUsedNoNotify);
        CHECK_FALSE(q.enable_notifications());  // nothing posted meanwhile
        CHECK(load_le<uint16_t>(r.at(r.addr.used, 2)) == 0);
        q.disable_notifications();
        r.post(0);                               // the driver adds while we are not listening
        CHECK(q.enable_notifications());         // so the caller must drain again
    }
    SUBCASE("event index") {
        auto q = r.queue(true);
        const uint64_t avail_event = r.addr.used + 4 + 8 * 8;
        r.post(0);
        q.pop().value();
        CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 1);
        q.disable_notifications();
        r.post(1);
        q.pop().value();
        CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 1);  // stale while disabled: no kicks
        CHECK_FALSE(q.enable_notifications());
        CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 2);
    }
}

TEST_CASE("an empty pop with notifications on publishes avail_event again")
{
    Ring r;
    r.desc(0, 0x10000, 8, 0, 0);
    auto q = r.queue(true);
    const uint64_t avail_event = r.addr.used + 4 + 8 * 8;
    q.set_positions({.last_avail = 5, .used_idx = 5, .signalled_used = 5, .notifications = true});
    store_le<uint16_t>(r.at(r.addr.avail + 2, 2), 5);
    r.avail = 5;
    CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 0);  // as a restored queue may find it
    CHECK_FALSE(q.pop().value().has_value());
    CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 5);  // the driver's next buffer kicks us
    q.disable_notifications();
    store_le<uint16_t>(r.at(avail_event, 2), 0);
    CHECK_FALSE(q.pop().value().has_value());
    CHECK(load_le<uint16_t>(r.at(avail_event, 2)) == 0);  // while draining, left alone
}

TEST_CASE("ring_view reads what the rings in guest memory say")
{
    Ring r;
    for (uint16_t i = 0; i < 3; ++i) r.desc(i, 0x10000, 8, vring::kDescWrite, 0);
    r.post(0);
    r.post(1);
    r.post(2);
    auto q = r.queue(true);
    store_le<uint16_t>(r.at(r.addr.avail + 4 + 2 * 8, 2), 7);  // used_event
    REQUIRE(q.pop().value().has_value());
    q.push_used(0, 8);
    const auto v = q.ring_view();
    CHECK(v.avail_idx == 3);
    CHECK(v.used_idx == 1);
    CHECK(v.used_event == 7);
    CHECK(v.avail_event == 1);
    CHECK(q.positions().last_avail == 1);
}

// ---- virtio-net transmit: only the card's own source MAC ---------------------------

#include <mutex>

#include "devices/virtio/virtio_net.hpp"
#include "vmm/io_thread.hpp"

#include <nlohmann/json.hpp>

namespace {

struct NetQueues : VirtioQueues {
    Ring rx, tx;
    Virtqueue rxq = rx.queue(), txq = tx.queue();
    vmm::IoThread* io_thread = nullptr;
    std::string failure;
    Virtqueue* queue(unsigned q) override { return q == vnet::kRxQueue ? &rxq : &txq; }
    const vmm::GuestMemory& memory() const override { return tx.mem; }
    uint64_t features() const override { return 0; }
    void used(unsigned) override {}
    void config_changed() override {}
    void fail(const std::string& why) override { failure = why; }
    bool failed() const override { return !failure.empty(); }
    vmm::IoThread& io() override { return *io_thread; }
};

struct SentFrames : net::NetBackend {
    std::vector<std::vector<uint8_t>> sent;
    void attach(net::FrameSink*) override {}
    Result<void> start() override { return ok(); }
    bool try_send(std::span<const uint8_t> frame) override
    {
        sent.emplace_back(frame.begin(), frame.end());
        return true;
    }
    void receive_ready() override {}
    void stop() override {}
};

}  // namespace

TEST_CASE("virtio-net drops and counts transmitted frames with another source MAC")
{
    const std::array<uint8_t, 6> mine{0x52, 0x54, 0, 0, 0, 1}, theirs{0x52, 0x54, 0, 0, 0, 2};
    auto backend = std::make_shared<SentFrames>();
    auto io = vmm::IoThread::create().value();
    VirtioNet net(mine, backend, *io);
    NetQueues queues;
    queues.io_thread = io.get();
    net.activate(queues);

    // Frame i in slot i: virtio header, then destination, source, payload.
    auto post = [&](uint16_t i, const std::array<uint8_t, 6>& source) {
        const uint64_t gpa = 0x10000 + 0x1000 * i;
        uint8_t* f = queues.tx.at(gpa, 12 + 60);
        std::memset(f, 0, 12 + 60);
        std::memset(f + 12, 0xff, 6);  // broadcast: learnt by every peer
        std::memcpy(f + 12 + 6, source.data(), 6);
        f[12 + 12] = static_cast<uint8_t>(i);
        queues.tx.desc(i, gpa, 12 + 60, 0, 0);
        queues.tx.post(i);
    };
    post(0, mine);
    post(1, theirs);
    post(2, mine);
    {
        std::lock_guard lock(net.lock());
        net.queue_notify(vnet::kTxQueue);
    }
    CHECK(queues.failure.empty());
    REQUIRE(backend->sent.size() == 2);
    CHECK(backend->sent[0][12] == 0);
    CHECK(backend->sent[1][12] == 2);
    CHECK(net.spoofed_tx_dropped() == 1);
    CHECK(queues.tx.used_idx() == 3);  // the dropped frame's buffer went back to the guest too
}

TEST_CASE("virtio-net reports a frame refused for want of RX buffers")
{
    const std::array<uint8_t, 6> mine{0x52, 0x54, 0, 0, 0, 1};
    auto io = vmm::IoThread::create().value();
    VirtioNet net(mine, std::make_shared<SentFrames>(), *io);
    NetQueues queues;
    queues.io_thread = io.get();
    net.activate(queues);
    std::vector<uint8_t> frame(60, 0xff);
    CHECK_FALSE(net.deliver_to_guest(frame));  // no RX buffer posted
    nlohmann::json report;
    {
        std::lock_guard lock(net.lock());
        net.report(report);
    }
    CHECK(report["net"]["rx_refused"] == true);
    CHECK(report["net"]["held_rx_frames"] == 0);

    queues.rx.desc(0, 0x10000, 12 + 60, vring::kDescWrite, 0);
    queues.rx.post(0);
    CHECK(net.deliver_to_guest(frame));
    CHECK(queues.rx.used_idx() == 1);
}
