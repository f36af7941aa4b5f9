#include <doctest/doctest.h>

#include "devices/disk_image.hpp"
#include "devices/virtio/virtio_blk.hpp"
#include "vmm/base/le.hpp"

using namespace vvmm;
using namespace vvmm::dev;

TEST_CASE("--disk option")
{
    auto d = vmm::parse_disk_flag("path=a.img,readonly=on,id=disk-7");
    REQUIRE(d.ok());
    CHECK(d->path == "a.img");
    CHECK(d->readonly);
    CHECK(d->id == "disk-7");
    CHECK_FALSE(vmm::parse_disk_flag("path=a.img").value().readonly);
    CHECK_FALSE(vmm::parse_disk_flag("readonly=on").ok());
    CHECK_FALSE(vmm::parse_disk_flag("path=a,readonly=maybe").ok());
    CHECK_FALSE(vmm::parse_disk_flag("path=a,cache=none").ok());
    CHECK_FALSE(vmm::parse_disk_flag("a.img").ok());
    CHECK_FALSE(vmm::parse_disk_flag("path=a,id=123456789012345678901").ok());
}

TEST_CASE("a missing disk image is a clear error")
{
    auto d = DiskImage::open({"/nonexistent/disk.img", false, ""});
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().message().find("cannot open disk image '/nonexistent/disk.img'") != std::string::npos);
}

TEST_CASE("block request parsing")
{
    auto mem = vmm::GuestMemory::create(1 << 20).value();
    auto put_header = [&](uint64_t gpa, uint32_t type, uint64_t sector) {
        auto s = mem.span(gpa, 16).value();
        store_le<uint32_t>(s.data(), type);
        store_le<uint64_t>(s.data() + 8, sector);
    };
    put_header(0x1000, blk::kTypeIn, 42);
    DescriptorChain read_chain{0, {{0x1000, 16, false}, {0x2000, 4096, true}, {0x3000, 1, true}}, 16, 4097};
    auto r = parse_block_request(mem, read_chain);
    REQUIRE(r.ok());
    CHECK(r->type == blk::kTypeIn);
    CHECK(r->sector == 42);
    CHECK(r->data_len == 4096);

    // Header and data in one descriptor (any layout is allowed).
    put_header(0x4000, blk::kTypeOut, 7);
    DescriptorChain write_chain{0, {{0x4000, 16 + 1024, false}, {0x3000, 1, true}}, 16 + 1024, 1};
    r = parse_block_request(mem, write_chain);
    REQUIRE(r.ok());
    CHECK(r->type == blk::kTypeOut);
    CHECK(r->data_len == 1024);

    DescriptorChain short_chain{0, {{0x1000, 8, false}, {0x3000, 1, true}}, 8, 1};
    CHECK_FALSE(parse_block_request(mem, short_chain).ok());
    DescriptorChain no_status{0, {{0x1000, 16, false}}, 16, 0};
    CHECK_FALSE(parse_block_request(mem, no_status).ok());
}

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

namespace {

// The device's view of its transport over a real queue in real guest
// memory; the device runs on a real I/O thread (io_uring).
struct Queues : VirtioQueues {
    vmm::GuestMemory mem = vmm::GuestMemory::create(1 << 20).value();
    QueueAddresses addr{16, 0x1000, 0x2000, 0x3000};
    Virtqueue vq = Virtqueue::create(mem, addr, false).value();
    vmm::IoThread* io_thread = nullptr;
    std::condition_variable cv;
    unsigned used_calls = 0;
    std::string failure;
    uint16_t avail = 0;

    Virtqueue* queue(unsigned q) override { return q == 0 ? &vq : nullptr; }
    const vmm::GuestMemory& memory() const override { return mem; }
    uint64_t features() const override { return 0; }
    void used(unsigned) override
    {
        ++used_calls;
        cv.notify_all();
    }
    void config_changed() override {}
    void fail(const std::string& why) override { failure = why; }
    bool failed() const override { return !failure.empty(); }
    vmm::IoThread& io() override { return *io_thread; }

    uint8_t* at(uint64_t gpa, uint64_t len = 1) { return mem.span(gpa, len).value().data(); }
    uint16_t used_idx() { return load_le<uint16_t>(at(addr.used + 2, 2)); }
    // Request in slot `slot` (descriptors 3*slot..3*slot+2): header, data, status.
    void post(unsigned slot, uint32_t type, uint64_t sector, uint32_t len)
    {
        const uint64_t hdr = 0x10000 + slot * 0x100, data = 0x20000 + slot * 0x10000, status = hdr + 0x80;
        store_le<uint32_t>(at(hdr, 16), type);
        store_le<uint64_t>(at(hdr + 8, 8), sector);
        auto desc = [&](uint16_t i, uint64_t gpa, uint32_t l, uint16_t flags, uint16_t next) {
            uint8_t* d = at(addr.desc + 16 * i, 16);
            store_le(d, gpa);
            store_le(d + 8, l);
            store_le(d + 12, flags);
            store_le(d + 14, next);
        };
        const uint16_t h = static_cast<uint16_t>(3 * slot);
        desc(h, hdr, 16, vring::kDescNext, h + 1);
        desc(h + 1, data, len, vring::kDescNext | (type == blk::kTypeIn ? vring::kDescWrite : 0), h + 2);
        desc(h + 2, status, 1, vring::kDescWrite, 0);
        *at(status) = 0xff;
        store_le<uint16_t>(at(addr.avail + 4 + 2 * (avail % addr.size), 2), h);
        ++avail;
        store_le<uint16_t>(at(addr.avail + 2, 2), avail);
    }
    uint8_t* data(unsigned slot, uint32_t len) { return at(0x20000 + slot * 0x10000, len); }
    uint8_t status(unsigned slot) { return *at(0x10000 + slot * 0x100 + 0x80); }
};

struct Rig {
    std::string dir;
    std::string base;
    std::unique_ptr<vmm::IoThread> io = vmm::IoThread::create().value();
    Queues q;
    std::shared_ptr<VirtioBlk> blk;
    Rig()
    {
        char tmpl[] = "/tmp/vvmm-blk-XXXXXX";
        dir = ::mkdtemp(tmpl);
        base = dir + "/disk.img";
        std::vector<char> bytes(256 * 1024);
        std::mt19937 rng(3);
        for (auto& b : bytes) b = static_cast<char>(rng());
        std::ofstream(base, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        blk = VirtioBlk::create({base, false, ""}).value();
        q.io_thread = io.get();
        std::lock_guard lock(blk->lock());
        blk->activate(q);
    }
    ~Rig()
    {
        io->stop();
        std::filesystem::remove_all(dir);
    }
    void kick()
    {
        io->post([this] {
            std::lock_guard lock(blk->lock());
            blk->queue_notify(0);
        });
    }
    bool wait_used(uint16_t n, int ms = 5000)
    {
        std::unique_lock lock(blk->lock());
        return q.cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return q.used_idx() >= n; });
    }
};

bool page_marked(const std::vector<uint64_t>& bits, uint64_t gpa)
{
    return bits[gpa / 4096 / 64] >> (gpa / 4096 % 64) & 1;
}

}  // namespace

TEST_CASE("virtio-blk over a layer chain: writes, freeze, copy-up, reads across layers, dirty marks, drain")
{
    Rig rig;
    rig.io->start();
    std::vector<uint8_t> model(256 * 1024);
    {
        std::ifstream f(rig.base, std::ios::binary);
        f.read(reinterpret_cast<char*>(model.data()), static_cast<std::streamsize>(model.size()));
    }
    auto write = [&](unsigned slot, uint64_t sector, uint32_t len, uint8_t fill) {
        std::memset(rig.q.data(slot, len), fill, len);
        std::memset(model.data() + sector * 512, fill, len);
        rig.q.post(slot, blk::kTypeOut, sector, len);
    };
    // Before any checkpoint: straight into the base.
    write(0, 3, 1024, 0x11);
    rig.kick();
    REQUIRE(rig.wait_used(1));
    CHECK(rig.q.status(0) == blk::kStatusOk);

    CHECK_FALSE(rig.blk->freeze(rig.dir).ok());  // not drained
    REQUIRE(rig.blk->drain().ok());
    auto d0 = rig.blk->freeze(rig.dir);
    REQUIRE(d0.ok());
    CHECK(d0->layers.empty());
    rig.blk->undrain();

    // Into the overlay: one sector of a block (copy-up) and whole blocks.
    write(1, 9, 512, 0x22);
    write(2, 16, 8192, 0x33);
    rig.kick();
    REQUIRE(rig.wait_used(3));
    CHECK(rig.q.status(1) == blk::kStatusOk);
    CHECK(rig.q.status(2) == blk::kStatusOk);

    // While drained, a queued request waits; undrain picks it up.
    REQUIRE(rig.blk->drain().ok());
    auto d1 = rig.blk->freeze(rig.dir);
    REQUIRE(d1.ok());
    CHECK(d1->layers.size() == 1);
    write(3, 20, 2048, 0x44);
    rig.kick();
    CHECK_FALSE(rig.wait_used(4, 200));
    CHECK(rig.blk->in_flight() == 0);
    rig.blk->undrain();
    REQUIRE(rig.wait_used(4));
    CHECK(rig.q.status(3) == blk::kStatusOk);

    // A read spanning base, both overlays: 40 KiB from sector 0.
    (void)rig.q.mem.take_host_dirty();
    const uint32_t len = 40 * 1024;
    rig.q.post(4, blk::kTypeIn, 0, len);
    rig.kick();
    REQUIRE(rig.wait_used(5));
    CHECK(rig.q.status(4) == blk::kStatusOk);
    CHECK(std::memcmp(rig.q.data(4, len), model.data(), len) == 0);
    const auto dirty = rig.q.mem.take_host_dirty();
    for (uint64_t gpa = 0x20000 + 4 * 0x10000; gpa < 0x20000 + 4 * 0x10000 + len; gpa += 4096)
        CHECK(page_marked(dirty, gpa));
    CHECK(page_marked(dirty, 0x10000));  // status bytes
    CHECK_FALSE(page_marked(dirty, 0x80000));

    // The base holds what it held at the first freeze; the checkpoint views read back.
    rig.io->stop();
    auto base_view = DiskChain::open(d0.value(), rig.dir).value();
    std::vector<uint8_t> b(1024);
    REQUIRE(base_view.read(3 * 512, b).ok());
    CHECK(b == std::vector<uint8_t>(1024, 0x11));
    REQUIRE(base_view.read(9 * 512, b).ok());
    CHECK(b != std::vector<uint8_t>(1024, 0x22));
    auto v1 = DiskChain::open(d1.value(), rig.dir).value();
    REQUIRE(v1.read(9 * 512, std::span(b).first(512)).ok());
    CHECK(std::vector<uint8_t>(b.begin(), b.begin() + 512) == std::vector<uint8_t>(512, 0x22));
    REQUIRE(v1.read(20 * 512, b).ok());
    CHECK(b != std::vector<uint8_t>(1024, 0x44));  // written after that checkpoint
}
