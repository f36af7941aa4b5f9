#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "devices/disk_layers.hpp"

using namespace vvmm;
using namespace vvmm::dev;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    std::string path;
    TempDir()
    {
        char tmpl[] = "/tmp/vvmm-layers-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

std::string make_base(const std::string& dir, uint64_t size, uint32_t seed)
{
    const std::string p = dir + "/base.img";
    std::vector<uint8_t> data(size);
    std::mt19937 rng(seed);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(size));
    return p;
}

std::vector<uint8_t> read_file(const std::string& p)
{
    std::ifstream f(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), {}};
}

void check_reads(const DiskChain& chain, const std::vector<uint8_t>& model)
{
    std::vector<uint8_t> all(model.size());
    REQUIRE(chain.read(0, all).ok());
    CHECK(all == model);
    // Unaligned pieces too (extent boundaries inside a read).
    std::mt19937 rng(99);
    for (int i = 0; i < 50; ++i) {
        const uint64_t off = rng() % model.size();
        const uint64_t len = 1 + rng() % std::min<uint64_t>(model.size() - off, 40000);
        std::vector<uint8_t> part(len);
        REQUIRE(chain.read(off, part).ok());
        CHECK(std::equal(part.begin(), part.end(), model.begin() + static_cast<ptrdiff_t>(off)));
    }
}

void random_write(DiskChain& chain, std::vector<uint8_t>& model, std::mt19937& rng)
{
    const uint64_t size = model.size();
    uint64_t off, len;
    switch (rng() % 3) {
    case 0:  // sector-aligned, as virtio-blk does
        off = (rng() % (size / 512)) * 512;
        len = std::min<uint64_t>(size - off, 512 * (1 + rng() % 24));
        break;
    case 1:  // whole blocks
        off = (rng() % (size / 4096)) * 4096;
        len = std::min<uint64_t>(size - off, 4096 * (1 + rng() % 4));
        break;
    default:  // any bytes
        off = rng() % size;
        len = 1 + rng() % std::min<uint64_t>(size - off, 9000);
    }
    std::vector<uint8_t> data(len);
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    REQUIRE(chain.write(off, data).ok());
    std::copy(data.begin(), data.end(), model.begin() + static_cast<ptrdiff_t>(off));
}

}  // namespace

TEST_CASE("disk chain: random writes and freezes match a reference model, every frozen view reads back")
{
    TempDir dir;
    const uint64_t size = (1 << 20) + 1536;  // last block is partial
    const std::string base = make_base(dir.path, size, 1);
    const auto base_bytes = read_file(base);
    auto chain = DiskChain::open({base, false, "x"});
    REQUIRE(chain.ok());
    std::vector<uint8_t> model = base_bytes;
    std::vector<std::pair<ChainDescription, std::vector<uint8_t>>> views;
    std::mt19937 rng(12345);
    for (int round = 0; round < 8; ++round) {
        const int writes = static_cast<int>(rng() % 60);
        for (int i = 0; i < writes; ++i) random_write(*chain, model, rng);
        check_reads(*chain, model);
        auto d = chain->freeze(dir.path);
        REQUIRE(d.ok());
        CHECK(d->layers.size() == static_cast<size_t>(round));
        CHECK(chain->overlay_count() == static_cast<size_t>(round + 1));
        views.emplace_back(d.value(), model);
        check_reads(*chain, model);
    }
    // After the first freeze the base holds exactly what it held then.
    CHECK(read_file(base) == views[0].second);
    // Every frozen view, opened again, reads what the disk held at its freeze.
    for (auto& [desc, bytes] : views) {
        auto view = DiskChain::open(desc, dir.path);
        REQUIRE(view.ok());
        check_reads(*view, bytes);
    }
    check_reads(*chain, model);
}

TEST_CASE("disk chain: two restores of one checkpoint are independent branches")
{
    TempDir dir;
    const uint64_t size = 256 * 1024;
    const std::string base = make_base(dir.path, size, 2);
    auto chain = DiskChain::open({base, false, ""}).value();
    std::vector<uint8_t> model = read_file(base);
    std::mt19937 rng(7);
    for (int i = 0; i < 30; ++i) random_write(chain, model, rng);
    REQUIRE(chain.freeze(dir.path).ok());
    for (int i = 0; i < 30; ++i) random_write(chain, model, rng);
    auto desc = chain.freeze(dir.path);
    REQUIRE(desc.ok());
    REQUIRE(desc->layers.size() == 1);
    const std::vector<uint8_t> at_ckpt = model;
    for (int i = 0; i < 30; ++i) random_write(chain, model, rng);  // the original goes on

    auto a = DiskChain::open(desc.value(), dir.path).value();
    auto b = DiskChain::open(desc.value(), dir.path).value();
    CHECK(a.top_path() != b.top_path());
    std::vector<uint8_t> ma = at_ckpt, mb = at_ckpt;
    std::mt19937 ra(100), rb(200);
    for (int i = 0; i < 40; ++i) {
        random_write(a, ma, ra);
        random_write(b, mb, rb);
    }
    check_reads(a, ma);
    check_reads(b, mb);
    check_reads(chain, model);
    // And a branch can be checkpointed again and restored.
    auto da = a.freeze(dir.path);
    REQUIRE(da.ok());
    CHECK(da->layers.size() == 2);
    check_reads(DiskChain::open(da.value(), dir.path).value(), ma);
}

TEST_CASE("disk chain: a bad map file or a changed base is refused with one clear line")
{
    TempDir dir;
    const uint64_t size = 64 * 1024;
    const std::string base = make_base(dir.path, size, 3);
    auto chain = DiskChain::open({base, false, ""}).value();
    REQUIRE(chain.freeze(dir.path).ok());
    for (uint64_t off : {0ull, 8192ull, 20000ull}) REQUIRE(chain.write(off, std::vector<uint8_t>(700, 0xab)).ok());
    auto desc = chain.freeze(dir.path).value();
    REQUIRE(desc.layers.size() == 1);
    const std::string map = desc.layers[0].map_path;
    REQUIRE(DiskChain::open(desc, dir.path).ok());
    const auto good = read_file(map);

    auto refused = [&](const std::vector<uint8_t>& bytes, const std::string& why) {
        std::ofstream(map, std::ios::binary | std::ios::trunc)
            .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
        auto r = DiskChain::open(desc, dir.path);
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message().find(map) != std::string::npos);
        CHECK(r.error().message().find(why) != std::string::npos);
        CHECK(r.error().message().find('\n') == std::string::npos);
    };
    for (size_t i = 0; i < good.size(); ++i) {  // any flipped byte is caught
        auto bad = good;
        bad[i] ^= 0x10;
        std::ofstream(map, std::ios::binary | std::ios::trunc)
            .write(reinterpret_cast<const char*>(bad.data()), static_cast<std::streamsize>(bad.size()));
        CHECK_FALSE(DiskChain::open(desc, dir.path).ok());
    }
    auto bad = good;
    bad[0] = 'X';
    refused(bad, "bad magic");
    bad = good;
    bad[40] ^= 1;
    refused(bad, "checksum mismatch");
    refused(std::vector<uint8_t>(good.begin(), good.end() - 3), "truncated");
    refused(std::vector<uint8_t>(good.begin(), good.begin() + 10), "too short");
    bad = good;
    bad[8] = 9;
    refused(bad, "version 9");

    // Restored good map: fine again; a map for another disk size is refused.
    std::ofstream(map, std::ios::binary | std::ios::trunc)
        .write(reinterpret_cast<const char*>(good.data()), static_cast<std::streamsize>(good.size()));
    REQUIRE(DiskChain::open(desc, dir.path).ok());
    auto other = desc;
    other.size = size * 2;
    CHECK_FALSE(DiskChain::open(other, dir.path).ok());  // the base does not match either
    CHECK(read_layer_map(map, size * 2).error().message().find("made for a disk of") != std::string::npos);
    // A run outside the disk, with a valid checksum, is still refused.
    REQUIRE(write_layer_map(dir.path + "/far.map", size, {size / 4096}).ok() == true);
    CHECK(read_layer_map(dir.path + "/far.map", size).error().message().find("outside the disk") != std::string::npos);
    auto runs = read_layer_map(map, size);
    REQUIRE(runs.ok());
    CHECK(runs->size() == 3);  // blocks 0, 2, 4 (offset 20000..20700 is in block 4)

    // A missing layer file.
    auto gone = desc;
    gone.layers[0].data_path += ".nope";
    CHECK(DiskChain::open(gone, dir.path).error().message().find("cannot open disk layer") != std::string::npos);

    // The base touched after the checkpoint (weak check: mtime and size).
    timespec times[2] = {{0, UTIME_OMIT}, {12345, 0}};
    REQUIRE(::utimensat(AT_FDCWD, base.c_str(), times, 0) == 0);
    auto r = DiskChain::open(desc, dir.path);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("changed since the checkpoint") != std::string::npos);
}

TEST_CASE("disk chain: saved description round-trips and refuses garbage")
{
    ChainDescription d;
    d.base = {"/a/b.img", false, "serial"};
    d.size = 1 << 30;
    d.base_mtime_ns = 1234567890123;
    d.layers = {{"/x/1.layer", "/x/1.layer.map"}, {"/x/2.layer", "/x/2.layer.map"}};
    StateWriter w;
    save_chain_description(w, d);
    StateReader r(w.data(), "disk");
    auto back = load_chain_description(r);
    REQUIRE(back.ok());
    CHECK(r.expect_end().ok());
    CHECK(back->base.path == d.base.path);
    CHECK(back->base.id == "serial");
    CHECK(back->size == d.size);
    CHECK(back->base_mtime_ns == d.base_mtime_ns);
    REQUIRE(back->layers.size() == 2);
    CHECK(back->layers[1].map_path == "/x/2.layer.map");
    auto cut = w.data();
    cut.resize(cut.size() - 5);
    StateReader short_reader(cut, "disk");
    CHECK_FALSE(load_chain_description(short_reader).ok());
}

TEST_CASE("disk chain: read-only disks get no overlay; the chain length is limited")
{
    TempDir dir;
    const std::string base = make_base(dir.path, 16 * 1024, 4);
    auto ro = DiskChain::open({base, true, ""}).value();
    CHECK_FALSE(ro.write(0, std::vector<uint8_t>(512)).ok());
    auto d = ro.freeze(dir.path);
    REQUIRE(d.ok());
    CHECK(d->layers.empty());
    CHECK(ro.overlay_count() == 0);
    CHECK(DiskChain::open(d.value(), dir.path).value().overlay_count() == 0);

    auto chain = DiskChain::open({base, false, ""}).value();
    std::vector<uint8_t> model = read_file(base);
    std::mt19937 rng(5);
    ChainDescription last;
    for (size_t i = 0; i < kMaxOverlays; ++i) {
        random_write(chain, model, rng);
        auto f = chain.freeze(dir.path);
        REQUIRE(f.ok());
        last = f.value();
    }
    CHECK(chain.overlay_count() == kMaxOverlays);
    random_write(chain, model, rng);
    auto f = chain.freeze(dir.path);
    REQUIRE_FALSE(f.ok());
    CHECK(f.error().message().find("already has 255 layers") != std::string::npos);
    check_reads(chain, model);  // a failed freeze leaves the chain working
    REQUIRE(chain.write(100, std::vector<uint8_t>(10, 1)).ok());
    // 254 frozen layers restore (plus one new top); one more would not fit.
    REQUIRE(last.layers.size() == kMaxOverlays - 1);
    CHECK(DiskChain::open(last, dir.path).ok());
    last.layers.push_back(last.layers.back());
    CHECK(DiskChain::open(last, dir.path).error().message().find("too long") != std::string::npos);
}

TEST_CASE("disk chain: freeze cost on a 1 GiB disk with thousands of written blocks" * doctest::skip(getenv("VVMM_BENCH") == nullptr))
{
    TempDir dir;
    const std::string base = dir.path + "/big.img";
    {
        UniqueFd fd(::open(base.c_str(), O_RDWR | O_CREAT, 0644));
        REQUIRE(::ftruncate(fd.get(), 1ll << 30) == 0);
    }
    auto chain = DiskChain::open({base, false, ""}).value();
    auto time = [&] {
        const auto t0 = std::chrono::steady_clock::now();
        auto d = chain.freeze(dir.path);
        REQUIRE(d.ok());
        return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    };
    std::mt19937 rng(1);
    std::vector<uint8_t> block(4096, 0x5a);
    for (int i = 0; i < 4000; ++i) REQUIRE(chain.write((rng() % (1u << 18)) * 4096, block).ok());
    MESSAGE("first freeze (base, 4000 blocks written to it): " << time() << " us");
    for (int round = 0; round < 3; ++round) {
        for (int i = 0; i < 4000; ++i) REQUIRE(chain.write((rng() % (1u << 18)) * 4096 + 512, std::span(block).first(1024)).ok());
        MESSAGE("overlay freeze (4000 blocks, partial writes copied up): " << time() << " us");
    }
    for (int i = 0; i < 4000; ++i) REQUIRE(chain.write((rng() % (1u << 18)) * 4096, block).ok());
    ::sync();
    MESSAGE("overlay freeze after sync (map + new overlay only): " << time() << " us");
}
