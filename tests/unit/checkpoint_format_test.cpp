// The checkpoint format's pure parts: state streams, sections and their
// versions, the manifest, memory checksums; and the dirty tracking that
// incremental checkpoints rely on, with a real KVM VM.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/checkpoint_retention.hpp"
#include "ckpt/checkpoint_loader.hpp"
#include "ckpt/dirty_tracker.hpp"
#include "ckpt/manifest.hpp"
#include "ckpt/memory_hash.hpp"
#include "ckpt/memory_image_writer.hpp"
#include "ckpt/state_file.hpp"
#include "devices/virtio/virtqueue.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/kvm_vm.hpp"

using namespace vvmm;
using namespace vvmm::ckpt;

namespace {

class Component : public Snapshottable {
public:
    Component(std::string name, uint16_t version, uint32_t value) : name_(std::move(name)), version_(version), value_(value) {}
    std::string_view section() const override { return name_; }
    uint16_t version() const override { return version_; }
    Result<void> save(StateWriter& out) const override
    {
        out.u32(value_);
        return ok();
    }
    Result<void> restore(StateReader& in, uint16_t v) override
    {
        restored_version = v;
        TRY_ASSIGN(value_, in.u32());
        return in.expect_end();
    }
    uint32_t value() const { return value_; }
    uint16_t restored_version = 0;

private:
    std::string name_;
    uint16_t version_;
    uint32_t value_;
};

std::string error_of(const Result<void>& r) { return r.ok() ? std::string("(no error)") : r.error().message(); }

}  // namespace

TEST_CASE("state reader refuses truncated, oversized and trailing data")
{
    StateWriter w;
    w.u32(7);
    w.bytes(std::vector<uint8_t>(10, 1));
    auto data = w.take();
    {
        StateReader r(data, "t");
        CHECK(r.u32().value() == 7);
        CHECK_FALSE(r.bytes(5).ok());  // longer than allowed
    }
    {
        std::vector<uint8_t> cut(data.begin(), data.end() - 1);
        StateReader r(cut, "t");
        CHECK(r.u32().ok());
        auto b = r.bytes();
        REQUIRE_FALSE(b.ok());
        CHECK(b.error().message().find("truncated") != std::string::npos);
    }
    {
        StateReader r(data, "t");
        CHECK(r.u32().ok());
        CHECK_FALSE(r.expect_end().ok());
    }
}

TEST_CASE("sections: round trip, and unknown, missing, duplicate or newer sections are refused")
{
    Component a("alpha", 2, 11), b("beta", 1, 22);
    Snapshottable* saved[] = {&a, &b};
    auto sections = capture_sections(saved).value();
    auto bytes = encode_state(sections);

    Component a2("alpha", 2, 0), b2("beta", 1, 0);
    Snapshottable* both[] = {&a2, &b2};
    REQUIRE(restore_sections(decode_state(bytes).value(), both).ok());
    CHECK(a2.value() == 11);
    CHECK(b2.value() == 22);
    CHECK(a2.restored_version == 2);

    Snapshottable* only_a[] = {&a2};
    CHECK(error_of(restore_sections(sections, only_a)).find("unknown section 'beta'") != std::string::npos);
    Component c("gamma", 1, 0);
    Snapshottable* with_c[] = {&a2, &b2, &c};
    CHECK(error_of(restore_sections(sections, with_c)).find("section 'gamma' is missing") != std::string::npos);
    Component old_a("alpha", 1, 0);  // this code only knows version 1
    Snapshottable* old[] = {&old_a, &b2};
    CHECK(error_of(restore_sections(sections, old)).find("newer than this vvmm's 1") != std::string::npos);

    auto dup = sections;
    dup.push_back(sections[0]);
    CHECK_FALSE(decode_state(encode_state(dup)).ok());
    auto bad = bytes;
    bad[0] = 'X';
    CHECK_FALSE(decode_state(bad).ok());
    bad = bytes;
    bad[8] = 9;  // format version
    CHECK(decode_state(bad).error().message().find("format version 9") != std::string::npos);
    bad = bytes;
    bad.resize(bad.size() - 2);
    CHECK_FALSE(decode_state(bad).ok());
}

TEST_CASE("manifest: round trip and field validation")
{
    Manifest m;
    m.id = "000002";
    m.parent = "000001";
    m.depth = 1;
    m.mode = "cow";
    m.created = "2026-11-22T00:00:00Z";
    m.vm.cpus = 2;
    m.vm.mem_bytes = 64ull << 20;
    m.vm.kernel = "k";
    m.vm.cmdline = "console=ttyS0";
    m.vm.disks = {{"d.img", true, "serial-1"}};
    m.vm.nics = {{"vm0", "10.0.0.1:7000", {"10.0.0.2:7000", "[::1]:7001"}, "52:54:00:00:00:01"}};
    m.state = {"state.bin", 100, 0x1234};
    m.memory.size = 64ull << 20;
    m.memory.full = false;
    m.memory.page_map = FileDigest{"memory.map", (64ull << 20) / 4096 / 8, 7};
    m.memory.chunks.assign(32, std::nullopt);
    m.memory.chunks[3] = 0xabcdef;
    m.disks.push_back({"/d.img", 4096, 5, {"disk0-a.layer"}});
    auto j = to_json(m);
    auto back = manifest_from_json(j);
    REQUIRE(back.ok());
    CHECK(back->parent == m.parent);
    CHECK(back->memory.chunks[3] == 0xabcdefu);
    CHECK(back->disks[0].layers == m.disks[0].layers);
    CHECK(back->vm.disks == m.vm.disks);
    CHECK(back->vm.nics == m.vm.nics);
    CHECK(j["vm"]["disks"][0]["path"] == "d.img");  // structured, not the --disk flag's text
    CHECK(j["vm"]["nics"][0]["peers"][1] == "[::1]:7001");

    auto refused = [&](auto change, const char* what) {
        auto k = j;
        change(k);
        auto r = manifest_from_json(k);
        REQUIRE_FALSE(r.ok());
        CHECK_MESSAGE(r.error().message().find(what) != std::string::npos, r.error().message());
    };
    refused([](auto& k) { k["format"] = "qcow2"; }, "not a vvmm checkpoint");
    refused([](auto& k) { k["format_version"] = vvmm::ckpt::kFormatVersion + 1; }, "newer");
    refused([](auto& k) { k["state"]["file"] = "../etc/passwd"; }, "not a file name");
    refused([](auto& k) { k["state"]["xxh3"] = "xyz"; }, "bad checksum");
    refused([](auto& k) { k["memory"]["chunks"].erase(0); }, "chunk checksums");
    refused([](auto& k) { k["parent"] = nullptr; }, "does not match the parent");
    refused([](auto& k) { k["vm"]["cpus"] = "two"; }, "wrong type");
    refused([](auto& k) { k["format_version"] = 1.4e79; }, "wrong type");  // found by the fuzzer: UB in get<>
    refused([](auto& k) { k["depth"] = -1; }, "wrong type");
    refused([](auto& k) { k["vm"]["cpus"] = 1ull << 40; }, "out of range");
    refused([](auto& k) { k["vm"]["mem_bytes"] = 12345; }, "multiple of 2 MiB");
    refused([](auto& k) { k["disks"] = nlohmann::json::array(); }, "disk layers do not match");
    refused([](auto& k) { k.erase("memory"); }, "missing field 'memory'");
    // Sizes are bounded before anything is allocated by them: what `vvmm run` takes.
    refused([](auto& k) { k["vm"]["mem_bytes"] = 2ull << 40; }, "out of range (32 MiB..1 TiB)");
    refused([](auto& k) { k["vm"]["mem_bytes"] = 16ull << 20; }, "out of range (32 MiB..1 TiB)");
    refused([](auto& k) { k["vm"]["cpus"] = 33; }, "vm.cpus out of range");
    refused([](auto& k) { k["vm"]["nics"] = std::vector<std::string>(32, "peer"); }, "than PCI slots");
    refused([](auto& k) { k["vm"]["disks"] = {"path=d.img"}; }, "field 'disks'");  // version 1's form in version 2
    refused([](auto& k) { k["vm"]["disks"][0]["id"] = std::string(21, 'x'); }, "longer than 20 bytes");
    refused([](auto& k) { k["vm"]["nics"][0].erase("listen"); }, "missing field 'listen'");
    // Every link of a chain keeps its stats: a crafted tree there could be gigabytes.
    refused([](auto& k) { k["stats"] = nlohmann::json::array({1, 2, 3}); }, "field 'stats'");
    refused([](auto& k) { k["stats"]["nested"] = {{"a", 1}}; }, "field 'stats'");
    refused([](auto& k) { k["stats"]["long"] = std::string(300, 'x'); }, "field 'stats'");
    auto with_stats = j;
    with_stats["stats"] = {{"pause_ms", 1.5}, {"pages", 7}, {"direct_io", true}};
    CHECK(manifest_from_json(with_stats).ok());
}

TEST_CASE("manifest: format version 1 (the flags' text for disks and networks) reads into the structured description")
{
    Manifest m;
    m.id = "000001";
    m.mode = "stop";
    m.created = "2026-11-22T00:00:00Z";
    m.vm.mem_bytes = 32ull << 20;
    m.vm.kernel = "k";
    m.state = {"state.bin", 1, 1};
    m.memory.size = 32ull << 20;
    m.memory.chunks.assign(16, std::nullopt);
    m.disks.push_back({"/d.img", 4096, 5, {}});
    auto j = to_json(m);
    j["format_version"] = 1;
    j["vm"].erase("nics");
    j["vm"]["disks"] = {"path=/d.img,readonly=on,id=s1"};
    j["vm"]["nets"] = {"peer,id=vm0,listen=10.0.0.1:7000,peers=10.0.0.2:7000;10.0.0.3:7000"};
    auto old = manifest_from_json(j);
    REQUIRE_MESSAGE(old.ok(), old.error().message());
    CHECK(old->vm.disks == std::vector<vvmm::vmm::DiskDescription>{{"/d.img", true, "s1"}});
    REQUIRE(old->vm.nics.size() == 1);
    CHECK(old->vm.nics[0] == vvmm::vmm::NicDescription{"vm0", "10.0.0.1:7000", {"10.0.0.2:7000", "10.0.0.3:7000"}, ""});
    // Written again, it is the current version's structured form.
    CHECK(to_json(old.value())["format_version"] == kFormatVersion);
    CHECK(to_json(old.value())["vm"]["nics"][0]["id"] == "vm0");

    j["vm"]["nets"] = {"peer,id=vm0,colour=blue"};
    CHECK_FALSE(manifest_from_json(j).ok());
    j["vm"]["nets"] = {42};
    CHECK_FALSE(manifest_from_json(j).ok());
}

TEST_CASE("memory checksums: per-page hashes folded per chunk equal the chunk read back")
{
    std::vector<uint8_t> chunk(kChunkSize, 0);
    for (size_t p = 0; p < kPagesPerChunk; p += 3) chunk[p * kPageSize + (p % 100)] = static_cast<uint8_t>(p + 1);
    std::vector<uint64_t> hashes(kPagesPerChunk);
    Bitmap pages(kPagesPerChunk);
    for (size_t p = 0; p < kPagesPerChunk; ++p) {
        const uint8_t* page = chunk.data() + p * kPageSize;
        hashes[p] = page_is_zero(page) ? zero_page_hash() : page_hash(page);
        pages.set(p);
    }
    auto folded = fold_chunk_hashes(hashes, pages);
    REQUIRE(folded.size() == 1);
    CHECK(folded[0] == chunk_hash(chunk));
    chunk[5 * kPageSize + 7] ^= 1;  // a flipped bit changes it
    CHECK(folded[0] != chunk_hash(chunk));
    // Pages outside the image read as holes (zeros).
    Bitmap some(kPagesPerChunk);
    some.set(0);
    auto partial = fold_chunk_hashes(hashes, some);
    std::vector<uint8_t> holes(kChunkSize, 0);
    std::memcpy(holes.data(), chunk.data(), kPageSize);
    CHECK(partial[0] == chunk_hash(holes));
    CHECK_FALSE(fold_chunk_hashes(hashes, Bitmap(kPagesPerChunk))[0].has_value());
}

TEST_CASE("memory image writer: zero pages are holes, data pages land at their offsets")
{
    char path[] = "/var/tmp/vvmm-memimg-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    ::unlink(path);
    std::vector<uint8_t> mem(2 * kChunkSize, 0);
    mem[kChunkSize + 3 * kPageSize] = 0x5a;  // chunk 1, page 3
    {
        auto w = MemoryImageWriter::create(path, mem.size(), 2, 4).value();
        uint64_t all[kPagesPerChunk / 64];
        std::memset(all, 0xff, sizeof all);
        for (uint64_t c = 0; c < 2; ++c) REQUIRE(w->submit(w->copy_here(c, mem.data() + c * kChunkSize, all).value()).ok());
        auto s = w->finish().value();
        CHECK(s.bytes_written == kPageSize);
        CHECK(s.pages == 2 * kPagesPerChunk);
        CHECK(s.chunk_hashes[1] == chunk_hash({mem.data() + kChunkSize, kChunkSize}));
    }
    int r = ::open(path, O_RDONLY);
    uint8_t b = 0;
    CHECK(::pread(r, &b, 1, static_cast<off_t>(kChunkSize + 3 * kPageSize)) == 1);
    CHECK(b == 0x5a);
    CHECK(::lseek(r, 0, SEEK_DATA) == static_cast<off_t>(kChunkSize + 3 * kPageSize));  // everything before is a hole
    ::close(r);
    ::unlink(path);
}

TEST_CASE("memory image writer: a chunk of scattered data pages queues more writes than the ring is deep")
{
    // Every other page holds data: 256 runs in one chunk through a ring 4
    // deep. Before the fix the writer waited for a completion of a write it
    // had not submitted and hung (a Linux guest's memory looks like this).
    char path[] = "/var/tmp/vvmm-memimg-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    ::close(fd);
    ::unlink(path);
    // Several such chunks back to back through the smallest pool: a buffer
    // must not be refilled while runs queued from it are still in flight.
    constexpr uint64_t kChunks = 32;
    std::vector<uint8_t> mem(kChunks * kChunkSize, 0);
    for (uint64_t p = 0; p < kChunks * kPagesPerChunk; p += 2)
        std::memset(&mem[p * kPageSize], static_cast<int>(p % 251 + 1), kPageSize);
    {
        auto w = MemoryImageWriter::create(path, mem.size(), 2, 4).value();
        uint64_t all[kPagesPerChunk / 64];
        std::memset(all, 0xff, sizeof all);
        for (uint64_t c = 0; c < kChunks; ++c)
            REQUIRE(w->submit(w->copy_here(c, mem.data() + c * kChunkSize, all).value()).ok());
        auto s = w->finish().value();
        CHECK(s.bytes_written == kChunks * kPagesPerChunk / 2 * kPageSize);
        for (uint64_t c = 0; c < kChunks; ++c)
            CHECK(s.chunk_hashes[c] == chunk_hash({mem.data() + c * kChunkSize, kChunkSize}));
    }
    std::vector<uint8_t> back(mem.size());
    int r = ::open(path, O_RDONLY);
    CHECK(::pread(r, back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
    CHECK(back == mem);
    ::close(r);
    ::unlink(path);
}

TEST_CASE("memory image writer: a file system that refuses O_DIRECT after creating the file (ramfs; tmpfs before 6.6)")
{
    // Linux creates the file, then fails the open with EINVAL; Debian 12's
    // tmpfs does that, and ramfs does it on every kernel, so ramfs stands in.
    if (::geteuid() != 0) {
        MESSAGE("skipped: mounting ramfs needs root");
        return;
    }
    char dir[] = "/var/tmp/vvmm-ramfs-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    REQUIRE(::mount("ramfs", dir, "ramfs", 0, nullptr) == 0);
    struct Unmount {
        const char* dir;
        ~Unmount()
        {
            ::umount2(dir, MNT_DETACH);
            ::rmdir(dir);
        }
    } unmount{dir};
    const std::string path = std::string(dir) + "/memory.img";
    const int probe = ::open((std::string(dir) + "/probe").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_DIRECT, 0600);
    CHECK(probe < 0);  // the premise: this file system refuses O_DIRECT at open
    {
        auto w = MemoryImageWriter::create(path, kChunkSize, 2, 4);
        REQUIRE_MESSAGE(w.ok(), (w.ok() ? "" : w.error().message()));
        CHECK_FALSE(w.value()->direct_io());
        std::vector<uint8_t> mem(kChunkSize, 0x11);
        uint64_t all[kPagesPerChunk / 64];
        std::memset(all, 0xff, sizeof all);
        REQUIRE(w.value()->submit(w.value()->copy_here(0, mem.data(), all).value()).ok());
        CHECK(w.value()->finish().value().bytes_written == kChunkSize);
    }
}

TEST_CASE("dirty tracking sees host-side device writes only through mark_dirty")
{
    if (::access("/dev/kvm", R_OK | W_OK) != 0) {
        MESSAGE("SKIPPED: no /dev/kvm");
        return;
    }
    auto kvm = vmm::KvmSystem::open().value();
    auto vm = vmm::KvmVm::create(kvm).value();
    auto mem = vmm::GuestMemory::create(32ull << 20).value();
    REQUIRE(mem.register_with(vm).ok());
    DirtyTracker tracker(vm, mem);
    REQUIRE(tracker.start().ok());

    // A device writes a frame into a guest buffer (as virtio-net RX does).
    dev::DescriptorChain chain;
    chain.segments.push_back({0x200000, 8192, true});
    chain.writable_bytes = 8192;
    std::vector<uint8_t> frame(6000, 0xee);
    dev::ChainWriter writer(mem, chain);
    REQUIRE(writer.write(frame));
    // A write that bypasses mark_dirty (what a forgotten call looks like).
    std::memset(mem.span(0x400000, 4096).value().data(), 1, 4096);

    auto dirty = tracker.take().value();
    CHECK(dirty.test(0x200000 / 4096));
    CHECK(dirty.test(0x201000 / 4096));
    CHECK_FALSE(dirty.test(0x202000 / 4096));
    CHECK_FALSE(dirty.test(0x400000 / 4096));  // KVM's log cannot see it: the device must mark it
    CHECK(dirty.count() == 2);
    CHECK(tracker.take().value().count() == 0);  // taking clears

    tracker.give_back(dirty);  // a failed checkpoint's pages come back
    CHECK(tracker.take().value().count() == 2);
}

TEST_CASE("bitmap: word-at-a-time ranges agree with bit by bit")
{
    for (uint64_t first : {0ull, 1ull, 63ull, 64ull, 100ull}) {
        for (uint64_t n : {0ull, 1ull, 64ull, 130ull}) {
            Bitmap a(300), b(300);
            a.set_range(first, n);
            for (uint64_t i = first; i < first + n && i < 300; ++i) b.set(i);
            CHECK(a.words() == b.words());
            for (uint64_t lo = 0; lo < 300; lo += 37) {
                bool any = false;
                for (uint64_t i = lo; i < lo + 70 && i < 300; ++i) any |= b.test(i);
                CHECK(a.any_in(lo, 70) == any);
            }
        }
    }
    Bitmap c(200);
    c.merge_words({0x5, ~0ull}, 64);  // aligned fast path
    CHECK(c.test(64));
    CHECK(c.test(66));
    CHECK_FALSE(c.test(65));
    CHECK(c.count() == 2 + 64);
    Bitmap d(200);
    d.merge_words({0, 0, 0, ~0ull}, 0);
    CHECK(d.count() == 200 - 192);  // trimmed to the bitmap's size
}

// ---- hostile checkpoint directories -------------------------------------------------

namespace {

namespace fs = std::filesystem;

struct TempDir {
    std::string path;
    TempDir()
    {
        char t[] = "/tmp/vvmm-hostile-XXXXXX";
        REQUIRE(::mkdtemp(t));
        path = t;
    }
    ~TempDir()
    {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

void write_text(const std::string& path, const std::string& text)
{
    std::ofstream f(path, std::ios::binary);
    f << text;
}

std::string message_of(const auto& r) { return r.ok() ? std::string("(no error)") : r.error().message(); }

const SealKey kTestKey{std::vector<uint8_t>(32, 7), "test key"};
const SealPolicy kTestPolicy{kTestKey, false};

void write_manifest(const std::string& dir, nlohmann::json j, const SealKey* key = &kTestKey)
{
    if (key) seal_manifest(j, *key);
    write_text(dir + "/manifest.json", j.dump(1));
}

nlohmann::json read_json(const std::string& path)
{
    std::ifstream f(path);
    return nlohmann::json::parse(f);
}

// A loadable checkpoint of a 32 MiB VM at root/id: full, or incremental on `parent`.
void write_checkpoint(const std::string& root, const std::string& id, std::optional<std::string> parent = {})
{
    const std::string dir = root + "/" + id;
    fs::create_directories(dir);
    Manifest m;
    m.id = id;
    m.parent = parent;
    m.depth = parent ? 1 : 0;
    m.mode = "stop";
    m.created = "2026-11-22T00:00:00Z";
    m.vm.cpus = 1;
    m.vm.mem_bytes = 32ull << 20;
    m.vm.kernel = "k";
    m.state = write_durable(dir, "state.bin", encode_state({})).value();
    m.memory.size = 32ull << 20;
    m.memory.full = !parent;
    m.memory.chunks.assign(16, std::nullopt);
    if (parent) m.memory.page_map = write_durable(dir, "memory.map", std::vector<uint8_t>(1024, 0)).value();
    const int fd = ::open((dir + "/memory.img").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(m.memory.size)) == 0);
    ::close(fd);
    write_manifest(dir, to_json(m));
}

// Replaces root/id/name with a symbolic link to a copy of it outside the checkpoint.
void plant_link(const std::string& root, const std::string& id, const std::string& name)
{
    const std::string file = root + "/" + id + "/" + name, outside = root + "/outside-" + name;
    fs::copy_file(file, outside);
    fs::remove(file);
    fs::create_symlink(outside, file);
}

}  // namespace

TEST_CASE("checkpoint roots: names that are not ours are ignored, never thrown on")
{
    TempDir t;
    for (const char* name : {".tmp-1-99999999999999999999", ".tmp-1-0", ".tmp--5", "99999999999999999999", "00000a",
                             "000007", "0000001"})
        fs::create_directories(t.path + "/" + name);
    auto prepared = prepare_root(t.path);
    CHECK_MESSAGE(prepared.ok(), message_of(prepared));
    CHECK(fs::exists(t.path + "/.tmp-1-99999999999999999999"));  // not a pid: not ours to remove
    CHECK(fs::exists(t.path + "/.tmp-1-0"));
    auto id = next_id(t.path);
    REQUIRE_MESSAGE(id.ok(), message_of(id));
    CHECK(id.value() == "000008");
}

TEST_CASE("small files are read into a buffer the file's size, not the limit's")
{
    TempDir t;
    const std::string path = t.path + "/small";
    write_text(path, "hello");
    auto text = read_small_file(path, 512ull << 20, "test file");
    REQUIRE(text.ok());
    CHECK(text.value() == "hello");
    CHECK(text.value().capacity() < 4096);  // it used to hold max + 1 bytes (512 MiB here)
    CHECK(message_of(read_small_file(path, 4, "test file")).find("more than a test file can be (4)") != std::string::npos);
    write_text(t.path + "/empty", "");
    CHECK(read_small_file(t.path + "/empty", 16, "test file").value().empty());
    // Symbolic links: followed for paths the user names, refused inside checkpoints.
    fs::create_symlink(path, t.path + "/link");
    CHECK(read_small_file(t.path + "/link", 16, "test file").value() == "hello");
    auto refused = read_small_file(t.path + "/link", 16, "test file", Symlinks::refuse);
    CHECK(message_of(refused).find("is a symbolic link") != std::string::npos);
}

TEST_CASE("a symbolic link planted in a checkpoint is refused with a clear error")
{
    {
        TempDir t;
        write_checkpoint(t.path, "000001");
        write_checkpoint(t.path, "000002", "000001");
        auto loaded = load_checkpoint(t.path + "/000002", kTestPolicy);
        REQUIRE_MESSAGE(loaded.ok(), message_of(loaded));  // the premise: it loads as it is
        CHECK(loaded->chain.size() == 2);
    }
    for (const char* name : {"manifest.json", "state.bin", "memory.img", "memory.map"}) {
        CAPTURE(name);
        TempDir t;
        write_checkpoint(t.path, "000001");
        write_checkpoint(t.path, "000002", "000001");
        plant_link(t.path, "000002", name);
        auto loaded = load_checkpoint(t.path + "/000002", kTestPolicy);
        CHECK(message_of(loaded).find("is a symbolic link") != std::string::npos);
    }
    {
        // The parent must be a sibling directory, not a link to one elsewhere.
        TempDir t;
        fs::create_directories(t.path + "/elsewhere");
        write_checkpoint(t.path + "/elsewhere", "000001");
        write_checkpoint(t.path, "000002", "000001");
        fs::create_directory_symlink(t.path + "/elsewhere/000001", t.path + "/000001");
        auto loaded = load_checkpoint(t.path + "/000002", kTestPolicy);
        CHECK(message_of(loaded).find("is a symbolic link") != std::string::npos);
    }
    {
        // What a checkpoint writes refuses to follow a planted link too.
        TempDir t;
        fs::create_symlink(t.path + "/target", t.path + "/state.bin");
        CHECK_FALSE(write_durable(t.path, "state.bin", std::vector<uint8_t>(4, 1)).ok());
        CHECK_FALSE(fs::exists(t.path + "/target"));
    }
}

TEST_CASE("manifest seals: a changed, unsealed or foreign-key manifest is refused unless trusted")
{
    TempDir t;
    write_checkpoint(t.path, "000001");
    write_checkpoint(t.path, "000002", "000001");
    REQUIRE_MESSAGE(load_checkpoint(t.path + "/000002", kTestPolicy).ok(), "the premise: sealed, it loads");

    const std::string top = t.path + "/000002/manifest.json", parent = t.path + "/000001/manifest.json";
    const nlohmann::json sealed = read_json(top);
    // A disk base is what a forger would point at a host file: any change breaks the seal.
    auto changed = sealed;
    changed["vm"]["cmdline"] = "init=/bin/sh";
    write_text(top, changed.dump());
    CHECK(message_of(load_checkpoint(t.path + "/000002", kTestPolicy)).find("does not match the test key") != std::string::npos);
    CHECK(load_checkpoint(t.path + "/000002", SealPolicy{kTestKey, true}).ok());
    // Spacing is not content: the same manifest written differently still verifies.
    write_text(top, sealed.dump(4));
    CHECK(load_checkpoint(t.path + "/000002", kTestPolicy).ok());

    auto unsealed = sealed;
    unsealed.erase("mac");
    write_text(top, unsealed.dump());
    CHECK(message_of(load_checkpoint(t.path + "/000002", kTestPolicy)).find("is not sealed") != std::string::npos);
    CHECK(load_checkpoint(t.path + "/000002", SealPolicy{std::nullopt, true}).ok());
    auto garbled = sealed;
    garbled["mac"] = "hmac-sha256:zz";
    write_text(top, garbled.dump());
    CHECK(message_of(load_checkpoint(t.path + "/000002", kTestPolicy)).find("does not match") != std::string::npos);

    write_text(top, sealed.dump());
    const SealPolicy other{SealKey{std::vector<uint8_t>(32, 8), "other key"}, false};
    CHECK(message_of(load_checkpoint(t.path + "/000002", other)).find("does not match the other key") != std::string::npos);
    // Every link of a chain is checked, not only the one named.
    auto parent_changed = read_json(parent);
    parent_changed["created"] = "2020-01-01T00:00:00Z";
    write_text(parent, parent_changed.dump());
    CHECK(message_of(load_checkpoint(t.path + "/000002", kTestPolicy)).find("000001/manifest.json has a MAC") !=
          std::string::npos);
}

TEST_CASE("checkpoint key files: created once, 0600, refused when others can read them or they are not a key")
{
    TempDir t;
    const std::string path = t.path + "/cfg/vvmm/checkpoint.key";
    CHECK(message_of(load_key_file(path, false)).find("No such file") != std::string::npos);
    auto made = load_key_file(path, true);
    REQUIRE_MESSAGE(made.ok(), message_of(made));
    CHECK(made->bytes.size() == 32);
    const auto mode = fs::status(path).permissions() & fs::perms::all;
    CHECK(mode == (fs::perms::owner_read | fs::perms::owner_write));
    auto again = load_key_file(path, true);
    REQUIRE(again.ok());
    CHECK(again->bytes == made->bytes);  // an existing key is never replaced

    fs::permissions(path, fs::perms::group_read, fs::perm_options::add);
    CHECK(message_of(load_key_file(path, false)).find("accessible to group or others") != std::string::npos);
    write_text(t.path + "/short.key", "abcd\n");
    fs::permissions(t.path + "/short.key", fs::perms::owner_read | fs::perms::owner_write);
    CHECK(message_of(load_key_file(t.path + "/short.key", false)).find("is not 64 hex digits") != std::string::npos);

    // A cluster's key follows from its secret and its name.
    const std::vector<uint8_t> secret(32, 1);
    CHECK(cluster_seal_key(secret, "a").bytes == cluster_seal_key(secret, "a").bytes);
    CHECK(cluster_seal_key(secret, "a").bytes != cluster_seal_key(secret, "b").bytes);
}

TEST_CASE("retention (storage = memory): only the kept checkpoint's chain stays, copies keep holes; a broken chain removes nothing")
{
    const std::string root = fs::temp_directory_path() / ("vvmm-retain-" + std::to_string(::getpid()));
    fs::remove_all(root);
    write_checkpoint(root, "000001");
    write_checkpoint(root, "000002", "000001");
    write_checkpoint(root, "000003");
    write_checkpoint(root, "000004", "000003");
    write_checkpoint(root, "000005", "000004");
    fs::create_directories(root + "/.tmp-000006-1");  // a checkpoint being written
    auto removed = remove_outside_chains(root, {"000005"}, kTestPolicy);
    REQUIRE_MESSAGE(removed.ok(), message_of(removed));
    CHECK(removed.value() == 2);
    CHECK_FALSE(fs::exists(root + "/000001"));
    CHECK_FALSE(fs::exists(root + "/000002"));
    for (const char* kept : {"000003", "000004", "000005", ".tmp-000006-1"}) CHECK(fs::exists(root + "/" + kept));

    // Persisting copies the chain, oldest first; holes stay holes; a second copy adds nothing.
    const std::string persisted = root + "-persist";
    fs::remove_all(persisted);
    auto copied = copy_chain(root, "000005", persisted, kTestPolicy);
    REQUIRE_MESSAGE(copied.ok(), message_of(copied));
    for (const char* id : {"000003", "000004", "000005"}) {
        CHECK(read_small_file(persisted + "/" + id + "/manifest.json", 1 << 20, "m").value() ==
              read_small_file(root + "/" + id + "/manifest.json", 1 << 20, "m").value());
        struct stat st {};
        REQUIRE(::stat((persisted + "/" + id + "/memory.img").c_str(), &st) == 0);
        CHECK(st.st_size == 32 << 20);
        CHECK(st.st_blocks * 512 < (1 << 20));  // the 32 MiB of zeros stayed a hole
    }
    CHECK_FALSE(fs::exists(persisted + "/000001"));
    auto again = copy_chain(root, "000005", persisted, kTestPolicy);
    REQUIRE(again.ok());
    CHECK(again.value() == 0);
    write_text(persisted + "/000003/manifest.json", "{}");  // someone else's checkpoint 000003
    CHECK(message_of(copy_chain(root, "000005", persisted, kTestPolicy)).find("holds another checkpoint") !=
          std::string::npos);
    fs::remove_all(persisted);

    write_checkpoint(root, "000007", "000006");  // its parent is gone
    auto broken = remove_outside_chains(root, {"000005", "000007"}, kTestPolicy);
    CHECK_FALSE(broken.ok());
    CHECK(fs::exists(root + "/000003"));
    // Two chains kept: the newest committed epoch's and the one before.
    write_checkpoint(root, "000008");
    write_checkpoint(root, "000009", "000008");
    auto two = remove_outside_chains(root, {"000009", "000004"}, kTestPolicy);
    REQUIRE_MESSAGE(two.ok(), message_of(two));
    CHECK(two.value() == 2);  // 000005 and 000007
    for (const char* kept : {"000003", "000004", "000008", "000009"}) CHECK(fs::exists(root + "/" + kept));
    fs::remove_all(root);
}
