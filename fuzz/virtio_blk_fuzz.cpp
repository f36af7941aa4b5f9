// libFuzzer target: virtio-blk request handling (VirtioBlk over a real disk
// layer chain on /dev/shm) driven by a hostile driver: request headers
// (any type, any sector), descriptor layouts (any addresses, lengths,
// read/write order, indirect tables), concurrent scribbles over the rings,
// device resets with I/O in flight, I/Os completing in any order or failing,
// and checkpoint freezes between requests. Disk I/O runs on the fake I/O
// thread (fuzz/support), which checks each request before the kernel sees it.
// A bug is a crash or sanitizer report, or:
//  - an I/O whose buffers are not inside guest RAM, or that reaches past the
//    end of its disk file, or that the kernel refuses as malformed;
//  - a disk or layer file whose size changes;
//  - requests left in flight once every I/O completed;
//  - a frozen chain whose description does not open again, or opens with
//    other contents than the running disk.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "devices/virtio/virtio_blk.hpp"
#include "fuzz/support/fuzz_platform.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/log.hpp"

using namespace vvmm;
using fuzz::check;

namespace {

constexpr uint64_t kRam = 512 * 1024;
constexpr uint64_t kDesc = 0x0000, kAvail = 0x1000, kUsed = 0x2000, kData = 0x3000;
constexpr int kMaxOps = 64;

vmm::GuestMemory& memory()
{
    static vmm::GuestMemory mem = vmm::GuestMemory::create(kRam).value();
    return mem;
}

const std::string& work_dir() { return fuzz::scratch_dir("blk"); }

uint8_t* ram(uint64_t gpa) { return memory().span(gpa, 1).value().data(); }

// The transport's side, reduced to what the device sees.
struct Queues : dev::VirtioQueues {
    std::optional<dev::Virtqueue> vq;
    vmm::IoThread* io_thread = nullptr;
    std::string failure;

    dev::Virtqueue* queue(unsigned q) override { return q == 0 && vq ? &*vq : nullptr; }
    const vmm::GuestMemory& memory() const override { return ::memory(); }
    uint64_t features() const override { return 0; }
    void used(unsigned q) override
    {
        check(q == 0 && vq.has_value(), "used() on a queue that is not running");
        (void)vq->should_notify();
    }
    void config_changed() override {}
    void fail(const std::string& why) override { failure = why; }
    bool failed() const override { return !failure.empty(); }
    vmm::IoThread& io() override { return *io_thread; }
};

struct Driver {
    FuzzedDataProvider& in;
    uint16_t qsize;
    uint16_t avail_idx = 0;
    uint16_t next_desc = 0;

    void desc(uint64_t table, uint32_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next)
    {
        auto d = memory().span(table + 16 * uint64_t(i), 16);
        if (!d) return;
        store_le<uint64_t>(d->data(), gpa);
        store_le<uint32_t>(d->data() + 8, len);
        store_le<uint16_t>(d->data() + 12, flags);
        store_le<uint16_t>(d->data() + 14, next);
    }

    uint64_t data_gpa()
    {
        switch (in.ConsumeIntegral<uint8_t>() % 4) {
        case 0: return in.ConsumeIntegralInRange<uint64_t>(kData, kRam - 1);
        case 1: return kData + 0x1000 * in.ConsumeIntegralInRange<uint64_t>(0, (kRam - kData) / 0x1000 - 1);
        case 2: return in.ConsumeIntegralInRange<uint64_t>(0, kRam);  // rings included
        default: return in.ConsumeIntegral<uint64_t>();
        }
    }

    uint32_t length()
    {
        switch (in.ConsumeIntegral<uint8_t>() % 4) {
        case 0: return 512 * in.ConsumeIntegralInRange<uint32_t>(0, 16);
        case 1: return in.ConsumeIntegralInRange<uint32_t>(0, 40);
        case 2: return in.ConsumeIntegralInRange<uint32_t>(0, 70000);
        default: return in.ConsumeIntegral<uint32_t>();
        }
    }

    void post()
    {
        static constexpr uint32_t kTypes[] = {dev::blk::kTypeIn, dev::blk::kTypeOut, dev::blk::kTypeFlush,
                                              dev::blk::kTypeGetId};
        const uint8_t t = in.ConsumeIntegral<uint8_t>();
        const uint32_t type = t < 240 ? kTypes[t % 4] : in.ConsumeIntegral<uint32_t>();
        const uint64_t sector = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 200) : in.ConsumeIntegral<uint64_t>();

        struct Seg {
            uint64_t gpa;
            uint32_t len;
            uint16_t flags;
        };
        std::vector<Seg> segs;
        if (in.ConsumeBool()) {
            // The usual shape: header, data, status byte (data may be split).
            segs.push_back({data_gpa(), 16, 0});
            const unsigned pieces = in.ConsumeIntegralInRange<unsigned>(0, 3);
            for (unsigned i = 0; i < pieces; ++i)
                segs.push_back({data_gpa(), 512 * in.ConsumeIntegralInRange<uint32_t>(0, 9),
                                uint16_t(type == dev::blk::kTypeOut ? 0 : dev::vring::kDescWrite)});
            segs.push_back({data_gpa(), 1, dev::vring::kDescWrite});
        } else {
            const unsigned n = in.ConsumeIntegralInRange<unsigned>(1, 8);
            for (unsigned i = 0; i < n; ++i) {
                const uint64_t gpa = data_gpa();
                const uint32_t len = length();
                segs.push_back({gpa, len, uint16_t(in.ConsumeBool() ? dev::vring::kDescWrite : 0)});
            }
        }
        // The header goes where the first buffer starts.
        if (auto h = memory().span(segs[0].gpa, 16)) {
            store_le<uint32_t>(h->data(), type);
            store_le<uint32_t>(h->data() + 4, 0);
            store_le<uint64_t>(h->data() + 8, sector);
        }
        const uint16_t head = next_desc % qsize;
        if (in.ConsumeIntegral<uint8_t>() < 40) {  // indirect table
            const uint64_t table = in.ConsumeBool() ? kData + 16 * in.ConsumeIntegralInRange<uint64_t>(0, 64) : data_gpa();
            for (uint32_t i = 0; i < segs.size(); ++i)
                desc(table, i, segs[i].gpa, segs[i].len,
                     uint16_t(segs[i].flags | (i + 1 < segs.size() ? dev::vring::kDescNext : 0)), uint16_t(i + 1));
            desc(kDesc, head, table, static_cast<uint32_t>(16 * segs.size()), dev::vring::kDescIndirect, 0);
            next_desc = uint16_t(next_desc + 1);
        } else {
            for (uint32_t i = 0; i < segs.size(); ++i) {
                const uint16_t at = uint16_t((next_desc + i) % qsize);
                const uint16_t next = uint16_t((next_desc + i + 1) % qsize);
                desc(kDesc, at, segs[i].gpa, segs[i].len,
                     uint16_t(segs[i].flags | (i + 1 < segs.size() ? dev::vring::kDescNext : 0)), next);
            }
            next_desc = uint16_t(next_desc + segs.size());
        }
        store_le<uint16_t>(ram(kAvail + 4 + 2 * uint64_t(avail_idx % qsize)), head);
        ++avail_idx;
        store_le<uint16_t>(ram(kAvail + 2), avail_idx);
    }
};

uint64_t file_size(int fd)
{
    struct stat st {};
    check(::fstat(fd, &st) == 0, "fstat of a disk file the device uses");
    return static_cast<uint64_t>(st.st_size);
}

void check_io(fuzz::IoKind kind, int fd, const iovec* iov, unsigned count, uint64_t offset)
{
    if (kind == fuzz::IoKind::fsync) return;
    const uint8_t* lo = memory().host_base();
    const uint8_t* hi = lo + kRam;
    uint64_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
        const auto* b = static_cast<const uint8_t*>(iov[i].iov_base);
        check(b >= lo && b <= hi && iov[i].iov_len <= static_cast<size_t>(hi - b), "disk I/O buffer outside guest RAM");
        total += iov[i].iov_len;
    }
    check(offset <= file_size(fd) && total <= file_size(fd) - offset, "disk I/O past the end of its file");
}

// Every file of the chain keeps its size: the base and each layer are as big as the disk.
void check_files(uint64_t disk_size)
{
    for (const auto& e : std::filesystem::directory_iterator(work_dir())) {
        const std::string name = e.path().filename();
        if (name == "disk.img" || name.ends_with(".layer"))
            check(std::filesystem::file_size(e.path()) == disk_size, "a disk or layer file changed size");
    }
}

std::vector<uint8_t> contents(const dev::DiskChain& disk)
{
    std::vector<uint8_t> out(disk.size());
    check(disk.read(0, out).ok(), "reading a whole disk chain failed");
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : LogLevel::error);
    fuzz::set_io_check(check_io);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    FuzzedDataProvider in(data, size);
    auto& mem = memory();
    auto all = mem.span(0, kRam).value();
    std::memset(all.data(), 0, all.size());
    std::filesystem::remove_all(work_dir());
    std::filesystem::create_directories(work_dir());

    // The disk: 1..160 sectors and maybe a tail that is not a whole sector.
    const uint64_t disk_size = 512 * in.ConsumeIntegralInRange<uint64_t>(1, 160) +
                               (in.ConsumeIntegral<uint8_t>() < 32 ? in.ConsumeIntegralInRange<uint64_t>(1, 511) : 0);
    dev::DiskSpec spec{work_dir() + "/disk.img", in.ConsumeIntegral<uint8_t>() < 40, ""};
    if (in.ConsumeBool()) spec.id = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<size_t>(0, 20));
    {
        UniqueFd f(::open(spec.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        std::vector<uint8_t> pattern(disk_size);
        for (size_t i = 0; i < pattern.size(); ++i) pattern[i] = static_cast<uint8_t>(i * 7 + i / 512);
        check(f.valid() && ::pwrite(f.get(), pattern.data(), pattern.size(), 0) == ssize_t(disk_size), "creating the disk image");
    }
    const uint16_t qsize = uint16_t(1u << in.ConsumeIntegralInRange<unsigned>(0, 8));
    const bool event_idx = in.ConsumeBool();

    auto io = vmm::IoThread::create().value();
    fuzz::set_io_chooser([&in] { return in.ConsumeIntegral<uint8_t>(); });
    auto blk = dev::VirtioBlk::create(spec).value();
    Queues queues;
    queues.io_thread = io.get();
    auto start_queue = [&] {
        queues.vq.emplace(dev::Virtqueue::create(mem, {qsize, kDesc, kAvail, kUsed}, event_idx).value());
        std::lock_guard lock(blk->lock());
        blk->activate(queues);
    };
    start_queue();
    Driver driver{in, qsize};

    for (int op = 0; op < kMaxOps && in.remaining_bytes() > 0; ++op) {
        switch (in.ConsumeIntegral<uint8_t>() % 10) {
        case 0: case 1: case 2:
            driver.post();
            break;
        case 3: case 4: {
            std::lock_guard lock(blk->lock());
            blk->queue_notify(0);
            break;
        }
        case 5:
            fuzz::pump(*io, in.ConsumeIntegralInRange<size_t>(0, 8));
            break;
        case 6:
            fuzz::pump(*io);
            break;
        case 7: {  // a checkpoint: drain, freeze, and the description must open to the same disk
            fuzz::pump(*io);
            check(blk->in_flight() == 0, "requests in flight after every I/O completed");
            check(blk->drain().ok(), "drain with nothing in flight failed");
            auto d = blk->freeze(work_dir());
            if (d) {
                auto again = dev::DiskChain::open(d.value(), work_dir());
                check(again.ok(), "a frozen disk's description does not open");
                check(contents(again.value()) == contents(blk->disk()), "a frozen disk reopens with other contents");
            }
            if (in.ConsumeBool()) {  // the guest kicks while the disk is drained: nothing starts until undrain
                std::lock_guard lock(blk->lock());
                blk->queue_notify(0);
            }
            check(fuzz::queued_io(*io) == 0, "disk I/O started while the device was drained");
            blk->undrain();
            break;
        }
        case 8: {  // the driver resets the device (I/O may be in flight) and starts it again
            {
                std::lock_guard lock(blk->lock());
                blk->reset();
            }
            queues.failure.clear();
            std::memset(ram(kAvail), 0, kData - kAvail);
            driver.avail_idx = 0;
            start_queue();
            break;
        }
        case 9: {  // the guest writes anywhere, rings included
            const uint64_t at = in.ConsumeIntegralInRange<uint64_t>(0, kRam - 1);
            const auto bytes = in.ConsumeBytes<uint8_t>(in.ConsumeIntegralInRange<size_t>(1, 16));
            if (!bytes.empty()) std::memcpy(ram(at), bytes.data(), std::min<size_t>(bytes.size(), kRam - at));
            break;
        }
        }
    }
    fuzz::set_io_chooser(nullptr);
    fuzz::pump(*io);
    check(fuzz::queued_io(*io) == 0 && blk->in_flight() == 0, "requests in flight after every I/O completed");
    check_files(disk_size);
    (void)contents(blk->disk());
    return 0;
}
