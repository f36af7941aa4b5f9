// The image diskless parity protects (ckpt/protected_image): guest memory
// assembled from a checkpoint chain, then the checkpoint's small files
// packed; and which chunks an incremental checkpoint can have changed.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/manifest.hpp"
#include "ckpt/memory_hash.hpp"
#include "ckpt/image_delta.hpp"
#include "ckpt/protected_image.hpp"
#include "ckpt/state_file.hpp"
#include "vmm/base/bitmap.hpp"
#include "vmm/base/le.hpp"

using namespace vvmm;
using namespace vvmm::ckpt;
namespace fs = std::filesystem;

namespace {

const SealKey kKey{std::vector<uint8_t>(32, 5), "protected image test"};
constexpr uint64_t kMem = 32ull << 20;  // 16 chunks, the smallest VM

std::string message_of(const auto& r) { return r.ok() ? std::string("(no error)") : r.error().message(); }

std::vector<uint8_t> page_of(uint8_t seed)
{
    std::vector<uint8_t> p(kPageSize);
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<uint8_t>(seed + i * 13);
    return p;
}

// A checkpoint at root/id whose memory.img holds `pages` (page index -> data):
// full (no parent), or incremental with exactly those pages in its page map.
void write_checkpoint(const std::string& root, const std::string& id, std::optional<std::string> parent,
                      const std::map<uint64_t, std::vector<uint8_t>>& pages)
{
    const std::string dir = root + "/" + id;
    fs::create_directories(dir);
    const int fd = ::open((dir + "/memory.img").c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, kMem) == 0);
    Bitmap map(kMem / kPageSize);
    for (const auto& [page, data] : pages) {
        REQUIRE(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(page * kPageSize)) == ssize_t(kPageSize));
        map.set(page);
    }
    Manifest m;
    m.id = id;
    m.parent = parent;
    m.depth = parent ? 1 : 0;
    m.mode = "stop";
    m.created = "2026-12-03T00:00:00Z";
    m.vm = {1, kMem, false, "k", "", "stdio", {}, {}};
    m.state = write_durable(dir, "state.bin", encode_state({})).value();
    m.memory.size = kMem;
    m.memory.full = !parent;
    std::vector<uint8_t> chunk(kChunkSize);
    for (uint64_t c = 0; c < kMem / kChunkSize; ++c) {
        REQUIRE(::pread(fd, chunk.data(), chunk.size(), static_cast<off_t>(c * kChunkSize)) == ssize_t(kChunkSize));
        const bool mine = !parent || map.any_in(c * 512, 512);
        m.memory.chunks.push_back(mine ? std::optional<uint64_t>(chunk_hash(chunk)) : std::nullopt);
    }
    ::close(fd);
    if (parent) {
        std::vector<uint8_t> bits(map.words().size() * 8);
        std::memcpy(bits.data(), map.words().data(), bits.size());
        m.memory.page_map = write_durable(dir, "memory.map", bits).value();
    }
    auto j = to_json(m);
    seal_manifest(j, kKey);
    std::ofstream(dir + "/manifest.json") << j.dump(1);
}

}  // namespace

TEST_CASE("protected image: memory from the chain, then the packed files; changed chunks from the page maps")
{
    const std::string root = fs::temp_directory_path() / ("vvmm-protected-" + std::to_string(::getpid()));
    fs::remove_all(root);
    write_checkpoint(root, "000001", std::nullopt, {{0, page_of(1)}, {1030, page_of(2)}});
    write_checkpoint(root, "000002", "000001", {{600, page_of(3)}, {1030, page_of(4)}});

    auto image = ProtectedImage::open(root + "/000002", SealPolicy{kKey, false});
    REQUIRE_MESSAGE(image.ok(), message_of(image));
    CHECK(image->memory_bytes() == kMem);
    CHECK(image->chunks() == 17);  // 16 of memory, 1 of files
    auto c0 = image->read_chunk(0);
    REQUIRE(c0.ok());
    CHECK(std::equal(c0->begin(), c0->begin() + kPageSize, page_of(1).begin()));  // from the parent
    auto c1 = image->read_chunk(1);
    REQUIRE(c1.ok());
    CHECK(std::equal(c1->begin() + 88 * kPageSize, c1->begin() + 89 * kPageSize, page_of(3).begin()));
    auto c2 = image->read_chunk(2);
    REQUIRE(c2.ok());
    CHECK(std::equal(c2->begin() + 6 * kPageSize, c2->begin() + 7 * kPageSize, page_of(4).begin()));  // the child's wins
    auto c3 = image->read_chunk(15);
    REQUIRE(c3.ok());
    CHECK(std::all_of(c3->begin(), c3->end(), [](uint8_t b) { return b == 0; }));
    CHECK_FALSE(image->read_chunk(17).ok());

    // Past memory: the memory chunks' checksums (once known), then the files.
    CHECK(message_of(image->read_chunk(16)).find("checksums") != std::string::npos);
    std::vector<uint64_t> hashes;
    for (uint64_t c = 0; c < 16; ++c) hashes.push_back(digest_of(image->read_chunk(c).value()));
    CHECK_FALSE(image->set_memory_hashes({1, 2}).ok());
    REQUIRE(image->set_memory_hashes(hashes).ok());
    auto tail = image->read_chunk(16);
    REQUIRE(tail.ok());
    CHECK(tail->size() % kPageSize == 0);
    CHECK(ProtectedImage::hash_region_bytes(16) == kPageSize);
    for (size_t c = 0; c < 16; ++c) CHECK(load_le<uint64_t>(tail->data() + 8 * c) == hashes[c]);
    CHECK(std::all_of(tail->begin() + 128, tail->begin() + kPageSize, [](uint8_t b) { return b == 0; }));
    const std::span<const uint8_t> side(tail->data() + kPageSize, tail->size() - kPageSize);
    auto files = unpack_side_files(side);
    REQUIRE_MESSAGE(files.ok(), message_of(files));
    REQUIRE(files->size() == 2);
    CHECK(files->at(0).name == "manifest.json");
    std::ifstream f(root + "/000002/manifest.json");
    const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    CHECK(std::string(files->at(0).bytes.begin(), files->at(0).bytes.end()) == text);
    CHECK(files->at(1).name == "state.bin");

    auto only = [](std::initializer_list<size_t> chunks) {
        std::vector<bool> v(17, false);
        for (size_t c : chunks) v[c] = true;
        return v;
    };
    CHECK(image->chunks_changed_since("000001") == only({1, 2, 16}));
    CHECK(image->chunks_changed_since("000002") == only({16}));
    CHECK(image->chunks_changed_since("000009") == std::vector<bool>(17, true));

    // A changed byte in a chunk the image reads is refused, never used.
    {
        std::fstream m(root + "/000001/memory.img", std::ios::in | std::ios::out | std::ios::binary);
        m.seekp(5);
        m.put('\x7f');
    }
    auto bad = ProtectedImage::open(root + "/000002", SealPolicy{kKey, false});
    REQUIRE(bad.ok());
    CHECK(message_of(bad->read_chunk(0)).find("corrupted") != std::string::npos);

    // Packed files that lie about their sizes or names are refused.
    auto packed = pack_side_files({{"state.bin", {1, 2, 3}}});
    CHECK(unpack_side_files(packed).ok());
    auto lying = packed;
    lying[12 + 2 + 9 + 3] = 0x01;  // the size: 16 MiB more than the packed bytes
    CHECK_FALSE(unpack_side_files(lying).ok());
    CHECK_FALSE(unpack_side_files(pack_side_files({{"../x", {1}}})).ok());
    fs::remove_all(root);
}

TEST_CASE("image delta: the base image with every sent delta folded in is the current image; unchanged chunks unread")
{
    const std::string root = fs::temp_directory_path() / ("vvmm-delta-" + std::to_string(::getpid()));
    fs::remove_all(root);
    write_checkpoint(root, "000001", std::nullopt, {{0, page_of(1)}, {1030, page_of(2)}, {1031, page_of(5)}});
    write_checkpoint(root, "000002", "000001", {{600, page_of(3)}, {1030, page_of(4)}, {1031, page_of(5)}});
    const SealPolicy policy{kKey, false};
    auto base = ProtectedImage::open(root + "/000001", policy);
    auto current = ProtectedImage::open(root + "/000002", policy);
    REQUIRE(base.ok());
    REQUIRE(current.ok());

    // The first epoch: against zeros, every non-zero page goes.
    std::vector<uint8_t> image(base->length(), 0);
    auto fold = [&](uint64_t offset, std::span<const uint8_t> delta) -> Result<void> {
        REQUIRE(offset + delta.size() <= image.size());
        CHECK(delta.size() <= 3 * kPageSize);
        for (size_t i = 0; i < delta.size(); ++i) image[offset + i] ^= delta[i];
        return ok();
    };
    auto first = image_delta(*base, nullptr, 3 * kPageSize + 100, fold);
    REQUIRE_MESSAGE(first.ok(), message_of(first));
    CHECK(first->pages_compared == base->length() / kPageSize);
    CHECK(base->memory_hashes().size() == base->memory_chunks());
    for (uint64_t c = 0; c < base->chunks(); ++c) {
        auto chunk = base->read_chunk(c);
        REQUIRE(chunk.ok());
        CHECK(std::equal(chunk->begin(), chunk->end(), image.begin() + static_cast<std::ptrdiff_t>(c * kChunkSize)));
    }

    // The next epoch: only the chunks the child's page map touches are read,
    // page 1031 (rewritten with the same bytes) is not sent, and folding the
    // deltas turns the base image into the current one.
    auto next = image_delta(*current, &*base, 3 * kPageSize, fold);
    REQUIRE_MESSAGE(next.ok(), message_of(next));
    CHECK(next->pages_compared == 2 * 512 + 2);  // chunks 1 and 2, the checksums' page and the files' page
    CHECK(next->pages_sent == 4);                // pages 600, 1030, the changed checksums and files
    CHECK(next->bytes_sent == 4 * kPageSize);
    image.resize(current->length(), 0);
    for (uint64_t c = 0; c < current->chunks(); ++c) {
        auto chunk = current->read_chunk(c);
        REQUIRE(chunk.ok());
        CHECK(std::equal(chunk->begin(), chunk->end(), image.begin() + static_cast<std::ptrdiff_t>(c * kChunkSize)));
        if (c < current->memory_chunks()) CHECK(current->memory_hashes()[c] == digest_of(*chunk));
    }
    // Without the base's checksums the unchanged chunks cannot be vouched for.
    auto unhashed = ProtectedImage::open(root + "/000001", policy);
    REQUIRE(unhashed.ok());
    CHECK_FALSE(image_delta(*current, &*unhashed, kPageSize, fold).ok());
    fs::remove_all(root);
}
