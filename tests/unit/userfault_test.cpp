// userfaultfd on the kind of mapping guest RAM is (a memfd mapped shared),
// driven by host threads. The KVM side is in kvm_memory_probe_test.cpp.
#include <doctest/doctest.h>

#include <sys/mman.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "ckpt/userfault.hpp"
#include "vmm/guest_memory.hpp"

using vvmm::ckpt::describe_event;
using vvmm::ckpt::kUffdFeatureWpUnpopulated;
using vvmm::ckpt::UffdMode;
using vvmm::ckpt::Userfault;

namespace {

constexpr uint64_t kPage = 4096;

// The error text of a failed Result, "" otherwise: doctest may format a
// _MESSAGE argument even when the check passed.
template <typename R>
std::string why(const R& r)
{
    return r.ok() ? std::string() : r.error().message();
}
constexpr uint64_t kWpFeatures = UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

double seconds_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TEST_CASE("describe_event decodes page faults and ignores other events")
{
    uffd_msg m{};
    m.event = UFFD_EVENT_PAGEFAULT;
    m.arg.pagefault.address = 0x7f0000003123;
    m.arg.pagefault.flags = UFFD_PAGEFAULT_FLAG_WRITE | UFFD_PAGEFAULT_FLAG_WP;
    m.arg.pagefault.feat.ptid = 42;
    auto f = describe_event(m);
    REQUIRE(f);
    CHECK(f->address == 0x7f0000003000);
    CHECK(f->write);
    CHECK(f->wp);
    CHECK(f->tid == 42);

    m.arg.pagefault.flags = 0;
    f = describe_event(m);
    REQUIRE(f);
    CHECK_FALSE(f->write);
    CHECK_FALSE(f->wp);

    m.event = UFFD_EVENT_REMOVE;
    CHECK_FALSE(describe_event(m));
}

TEST_CASE("userfault: feature names and a clear error for a feature the kernel lacks")
{
    CHECK(vvmm::ckpt::uffd_feature_names(UFFD_FEATURE_MISSING_SHMEM | kUffdFeatureWpUnpopulated) ==
          "MISSING_SHMEM|WP_UNPOPULATED");
    CHECK(vvmm::ckpt::uffd_feature_names(1ull << 60) == "0x1000000000000000");
    auto u = Userfault::create(1ull << 60);
    REQUIRE_FALSE(u.ok());
    CHECK(u.error().message().find("lacks 0x1000000000000000") != std::string::npos);
}

TEST_CASE("userfault: the features checkpoints need are available")
{
    auto avail = Userfault::available_features();
    REQUIRE_MESSAGE(avail.ok(), why(avail));
    MESSAGE("userfaultfd features here: " << vvmm::ckpt::uffd_feature_names(*avail));
    CHECK((*avail & UFFD_FEATURE_MISSING_SHMEM));
    CHECK((*avail & UFFD_FEATURE_WP_HUGETLBFS_SHMEM));
    auto u = Userfault::create(UFFD_FEATURE_MISSING_SHMEM | kWpFeatures, kUffdFeatureWpUnpopulated);
    REQUIRE_MESSAGE(u.ok(), why(u));
    CHECK(u->has(UFFD_FEATURE_MISSING_SHMEM));
    CHECK(u->has(kUffdFeatureWpUnpopulated) == bool(*avail & kUffdFeatureWpUnpopulated));
}

TEST_CASE("userfault: a host write to a write-protected memfd page waits for the handler")
{
    auto mem = vvmm::vmm::GuestMemory::create(16 * kPage);
    REQUIRE(mem.ok());
    uint8_t* base = mem->host_base();
    std::memset(base, 0xAA, 16 * kPage);  // populate
    auto u = Userfault::create(kWpFeatures);
    REQUIRE_MESSAGE(u.ok(), why(u));
    REQUIRE(u->register_range(base, 16 * kPage, UffdMode::wp).ok());
    REQUIRE(u->write_protect(base, 16 * kPage, true).ok());

    std::atomic<bool> writer_done{false};
    std::vector<uint8_t> saved(kPage);
    std::atomic<int> events{0};
    std::thread writer([&] {
        std::memset(base + 5 * kPage + 100, 0x55, 8);
        writer_done = true;
    });
    for (int i = 0; i < 50 && events == 0; ++i) {
        auto e = u->read_event(100);
        REQUIRE(e.ok());
        if (!*e) continue;
        auto f = describe_event(**e);
        REQUIRE(f);
        CHECK(f->address == reinterpret_cast<uint64_t>(base + 5 * kPage));
        CHECK(f->wp);
        CHECK(f->write);
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
        CHECK_FALSE(writer_done.load());  // still blocked: the old content is ours to save
        std::memcpy(saved.data(), base + 5 * kPage, kPage);
        REQUIRE(u->write_protect(base + 5 * kPage, kPage, false).ok());
        ++events;
    }
    writer.join();
    CHECK(events == 1);
    CHECK(saved[100] == 0xAA);
    CHECK(base[5 * kPage + 100] == 0x55);
    // Other pages are still protected; unprotecting all lets the next write through.
    REQUIRE(u->write_protect(base, 16 * kPage, false).ok());
    base[0] = 1;
    CHECK(base[0] == 1);
}

TEST_CASE("userfault: missing pages of a memfd are served by copy and zeropage")
{
    auto mem = vvmm::vmm::GuestMemory::create(8 * kPage);
    REQUIRE(mem.ok());
    uint8_t* base = mem->host_base();
    auto u = Userfault::create(UFFD_FEATURE_MISSING_SHMEM);
    REQUIRE_MESSAGE(u.ok(), why(u));
    REQUIRE(u->register_range(base, 8 * kPage, UffdMode::missing).ok());

    std::vector<uint8_t> image(8 * kPage);
    for (size_t i = 0; i < image.size(); ++i) image[i] = static_cast<uint8_t>(i * 7 + 3);
    uint32_t read_value = 0;
    std::thread reader([&] { std::memcpy(&read_value, base + 2 * kPage + 8, 4); });
    std::optional<uffd_msg> ev;
    for (int i = 0; i < 50 && !ev; ++i) {
        auto e = u->read_event(100);
        REQUIRE(e.ok());
        ev = *e;
    }
    REQUIRE(ev);
    auto f = describe_event(*ev);
    REQUIRE(f);
    CHECK(f->address == reinterpret_cast<uint64_t>(base + 2 * kPage));
    CHECK_FALSE(f->wp);
    auto copied = u->copy(base + 2 * kPage, image.data() + 2 * kPage, kPage);
    REQUIRE(copied.ok());
    CHECK(*copied == kPage);
    reader.join();
    uint32_t want;
    std::memcpy(&want, image.data() + 2 * kPage + 8, 4);
    CHECK(read_value == want);

    // A range copy over a present page skips it and fills the rest.
    copied = u->copy(base, image.data(), 4 * kPage);
    REQUIRE_MESSAGE(copied.ok(), why(copied));
    CHECK(*copied == 3 * kPage);
    CHECK(std::memcmp(base, image.data(), 4 * kPage) == 0);
    auto zeroed = u->zeropage(base + 3 * kPage, 5 * kPage);
    REQUIRE(zeroed.ok());
    CHECK(*zeroed == 4 * kPage);
    CHECK(base[7 * kPage + 5] == 0);
    CHECK(base[3 * kPage + 5] == image[3 * kPage + 5]);
}

TEST_CASE("userfault: write-protecting never-touched memfd pages (shmem PTE markers; no WP_UNPOPULATED needed)")
{
    auto u = Userfault::create(kWpFeatures);
    REQUIRE(u.ok());
    auto mem = vvmm::vmm::GuestMemory::create(8 * kPage);
    REQUIRE(mem.ok());
    uint8_t* base = mem->host_base();
    REQUIRE(u->register_range(base, 8 * kPage, UffdMode::wp).ok());
    REQUIRE(u->write_protect(base, 8 * kPage, true).ok());
    std::atomic<bool> done{false};
    std::thread writer([&] {
        base[3 * kPage] = 9;
        done = true;
    });
    int wp_events = 0;
    for (int i = 0; i < 10 && !done; ++i) {
        auto e = u->read_event(50);
        REQUIRE(e.ok());
        if (!*e) continue;
        auto f = describe_event(**e);
        REQUIRE(f);
        CHECK(f->address == reinterpret_cast<uint64_t>(base + 3 * kPage));
        wp_events += f->wp;
        REQUIRE(u->write_protect(base + 3 * kPage, kPage, false).ok());
    }
    writer.join();
    // cow checkpoints rely on this on every kernel they accept (5.19+).
    CHECK(wp_events == 1);
    CHECK(base[3 * kPage] == 9);
}

TEST_CASE("userfault: UFFDIO_COPY throughput in 2 MiB chunks (measured)")
{
    constexpr uint64_t kSize = 64ull << 20, kChunk = 2ull << 20;
    auto mem = vvmm::vmm::GuestMemory::create(kSize);
    REQUIRE(mem.ok());
    auto u = Userfault::create(UFFD_FEATURE_MISSING_SHMEM);
    REQUIRE(u.ok());
    REQUIRE(u->register_range(mem->host_base(), kSize, UffdMode::missing).ok());
    std::vector<uint8_t> src(kChunk, 0x5A);
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
    for (uint64_t off = 0; off < kSize; off += kChunk) {
        auto c = u->copy(mem->host_base() + off, src.data(), kChunk);
        REQUIRE(c.ok());
        total += *c;
    }
    const double s = seconds_since(t0);
    CHECK(total == kSize);
    CHECK(mem->host_base()[kSize - 1] == 0x5A);
    MESSAGE("UFFDIO_COPY: " << (kSize >> 20) << " MiB in 2 MiB chunks, " << (kSize / s) / (1 << 20) << " MiB/s");
}
