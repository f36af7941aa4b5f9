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
#include "ckpt/parity_rebuild.hpp"
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
    m.vm.mem_bytes = kMem;
    m.vm.kernel = "k";
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

namespace {

struct MemberImage {
    std::string dir;                                          // the checkpoint
    std::vector<std::pair<uint64_t, std::vector<uint8_t>>> runs;  // its image, non-zero pages
    uint64_t length = 0, hashes_xxh3 = 0;
};

MemberImage whole_image(const std::string& dir)
{
    MemberImage m{dir, {}, 0, 0};
    auto image = ProtectedImage::open(dir, SealPolicy{kKey, false});
    REQUIRE(image.ok());
    auto r = image_delta(*image, nullptr, 8 * kPageSize, [&](uint64_t offset, std::span<const uint8_t> d) -> Result<void> {
        m.runs.emplace_back(offset, std::vector<uint8_t>(d.begin(), d.end()));
        return ok();
    });
    REQUIRE(r.ok());
    m.length = image->length();
    m.hashes_xxh3 = digest_of_hashes(image->memory_hashes());
    return m;
}

uint64_t file_digest(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return digest_of(bytes);
}

}  // namespace

TEST_CASE("parity rebuild: lost members come back as full checkpoints equal to theirs; a bad chunk is refused")
{
    const std::string root = fs::temp_directory_path() / ("vvmm-rebuild-" + std::to_string(::getpid()));
    fs::remove_all(root);
    write_checkpoint(root + "/m0", "000001", std::nullopt, {{0, page_of(1)}, {700, page_of(2)}});
    write_checkpoint(root + "/m1", "000001", std::nullopt, {{5, page_of(3)}});
    write_checkpoint(root + "/m1", "000002", "000001", {{5, page_of(4)}, {1500, page_of(5)}});
    write_checkpoint(root + "/m2", "000001", std::nullopt, {{3000, page_of(6)}});
    const std::vector<MemberImage> members = {whole_image(root + "/m0/000001"), whole_image(root + "/m1/000002"),
                                              whole_image(root + "/m2/000001")};

    struct Case {
        ParityCodec::Kind kind;
        unsigned k;
        std::vector<unsigned> lost;
    };
    for (const Case& t : {Case{ParityCodec::Kind::xor_parity, 1, {1}}, Case{ParityCodec::Kind::reed_solomon, 2, {0, 2}}}) {
        CAPTURE(t.k);
        auto codec = ParityCodec::create(t.kind, 3, t.k);
        REQUIRE(codec.ok());
        // The holders' blocks, as the epochs leave them.
        uint64_t longest = 0;
        for (const auto& m : members) longest = std::max(longest, m.length);
        std::vector<std::vector<uint8_t>> parity(t.k, std::vector<uint8_t>(longest, 0));
        for (unsigned i = 0; i < 3; ++i)
            for (const auto& [offset, data] : members[i].runs)
                for (unsigned j = 0; j < t.k; ++j)
                    codec->update_block(i, j, data.data(), parity[j].data() + offset, data.size());

        auto rebuild_into = [&](const std::string& out, const std::vector<std::vector<uint8_t>>& blocks) {
            std::vector<unsigned> used;
            for (unsigned j = 0; j < t.lost.size(); ++j) used.push_back(j);
            auto r = ParityRebuild::create(*codec, t.lost, used, root + "/work", 1ull << 30);
            REQUIRE_MESSAGE(r.ok(), message_of(r));
            for (unsigned i = 0; i < 3; ++i) {
                if (std::find(t.lost.begin(), t.lost.end(), i) != t.lost.end()) continue;
                for (const auto& [offset, data] : members[i].runs) REQUIRE(r->add_member(i, offset, data).ok());
            }
            for (unsigned j : used) REQUIRE(r->add_parity(j, 0, blocks[j]).ok());
            std::vector<Result<uint64_t>> written;
            for (size_t n = 0; n < t.lost.size(); ++n) {
                const MemberImage& m = members[t.lost[n]];
                const std::string id = fs::path(m.dir).filename();
                const RebuildTarget target{id, kMem, m.length, m.hashes_xxh3, file_digest(m.dir + "/manifest.json")};
                written.push_back(write_rebuilt_checkpoint(out + "/m" + std::to_string(t.lost[n]), target,
                                                           [&](uint64_t c) -> Result<std::vector<uint8_t>> {
                                                               TRY_ASSIGN(auto chunks, r->solve_chunk(c));
                                                               return std::move(chunks[n]);
                                                           },
                                                           kKey));
            }
            return written;
        };

        const std::string out = root + "/rebuilt-" + std::to_string(t.k);
        const auto written = rebuild_into(out, parity);
        for (size_t n = 0; n < t.lost.size(); ++n) {
            REQUIRE_MESSAGE(written[n].ok(), message_of(written[n]));
            const MemberImage& m = members[t.lost[n]];
            const std::string dir = out + "/m" + std::to_string(t.lost[n]) + "/" + fs::path(m.dir).filename().string();
            CHECK(written[n].value() == file_digest(dir + "/manifest.json"));
            auto original = ProtectedImage::open(m.dir, SealPolicy{kKey, false});
            auto rebuilt = ProtectedImage::open(dir, SealPolicy{kKey, false});
            REQUIRE_MESSAGE(rebuilt.ok(), message_of(rebuilt));
            CHECK(read_manifest(dir, SealPolicy{kKey, false})->parent == std::nullopt);  // a full checkpoint
            for (uint64_t c = 0; c < original->memory_chunks(); ++c) {
                auto a = rebuilt->read_chunk(c);
                REQUIRE_MESSAGE(a.ok(), message_of(a));
                CHECK(*a == *original->read_chunk(c));
            }
        }

        // One flipped byte in the parity: the rebuilt chunk is refused, nothing is published.
        auto bad = parity;
        bad[0][kChunkSize + 17] ^= 0x40;
        const std::string refused = root + "/refused-" + std::to_string(t.k);
        for (const auto& w : rebuild_into(refused, bad)) {
            CHECK(message_of(w).find("does not match its checksum") != std::string::npos);
        }
        for (unsigned i : t.lost) {
            const std::string vm_root = refused + "/m" + std::to_string(i);
            CHECK_FALSE(fs::exists(vm_root + "/" + fs::path(members[i].dir).filename().string()));
        }
    }
    // More lost than parity: one clear error.
    auto xor_codec = ParityCodec::create(ParityCodec::Kind::xor_parity, 3, 1);
    CHECK(message_of(ParityRebuild::create(*xor_codec, {0, 1}, {0}, root + "/work", 1ull << 30)).find("only 1 of its parity") !=
          std::string::npos);
    fs::remove_all(root);
}
