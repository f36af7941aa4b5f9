// A node's parity blocks across epochs (ckpt/parity_store): the first epoch
// folds in whole images, later ones only their changed pages; an aborted
// epoch leaves the committed one whole; a corrupted chunk or a forged record
// is refused; and the blocks rebuild a lost member's image exactly.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <vector>

#include "ckpt/manifest.hpp"
#include "ckpt/parity_store.hpp"

using namespace vvmm;
using namespace vvmm::ckpt;
namespace fs = std::filesystem;

namespace {

using Image = std::vector<uint8_t>;
const SealKey kKey = cluster_seal_key(std::vector<uint8_t>(32, 9), "paritytest");

std::string message_of(const auto& r) { return r.ok() ? std::string("(no error)") : r.error().message(); }

// The whole block of a finished epoch, every chunk checked.
Image read_block(const ParityBlockStore& store, uint64_t epoch)
{
    auto r = store.record(epoch);
    REQUIRE_MESSAGE(r.ok(), message_of(r));
    Image out;
    for (uint64_t c = 0; c < r->chunk_xxh3.size(); ++c) {
        auto chunk = store.read_chunk(r.value(), c);
        REQUIRE_MESSAGE(chunk.ok(), message_of(chunk));
        out.insert(out.end(), chunk->begin(), chunk->end());
    }
    return out;
}

// What the K blocks must be: the codec over the images, zero-padded to the longest.
std::vector<Image> expected_parity(const ParityCodec& codec, std::vector<Image> images)
{
    size_t len = 0;
    for (const auto& i : images) len = std::max(len, i.size());
    for (auto& i : images) i.resize(len, 0);
    std::vector<Image> parity(codec.parity_blocks(), Image(len));
    std::vector<const uint8_t*> data;
    std::vector<uint8_t*> out;
    for (auto& i : images) data.push_back(i.data());
    for (auto& p : parity) out.push_back(p.data());
    codec.encode(data, out, len);
    return parity;
}

}  // namespace

TEST_CASE("parity store: full first epoch, dirty-page deltas after, abort keeps the committed epoch, rebuild")
{
    const fs::path dir = fs::temp_directory_path() / ("vvmm-parity-" + std::to_string(::getpid()));
    fs::remove_all(dir);
    auto codec = ParityCodec::create(ParityCodec::Kind::reed_solomon, 3, 2);
    REQUIRE(codec);
    ParityBlockStore p0((dir / "set0.p0").string(), codec.value(), 0, kKey, 64 << 20);
    ParityBlockStore p1((dir / "set0.p1").string(), codec.value(), 1, kKey, 64 << 20);
    ParityBlockStore* stores[] = {&p0, &p1};

    std::mt19937 rng(12);
    auto random_image = [&](size_t len) {
        Image i(len);
        std::generate(i.begin(), i.end(), [&] { return static_cast<uint8_t>(rng()); });
        return i;
    };
    // Members of different sizes; the block is as long as the longest.
    std::vector<Image> images = {random_image(3 << 20), random_image((5 << 20) + 4096), random_image(1 << 20)};

    // Epoch 1: whole images, in 1 MiB pieces, as a member sends them.
    for (auto* s : stores) {
        REQUIRE(s->begin(1, std::nullopt).ok());
        for (unsigned m = 0; m < 3; ++m)
            for (size_t at = 0; at < images[m].size(); at += 1 << 20) {
                const size_t len = std::min<size_t>(1 << 20, images[m].size() - at);
                REQUIRE(s->apply(m, at, {images[m].data() + at, len}).ok());
            }
        auto r = s->finish();
        REQUIRE_MESSAGE(r.ok(), message_of(r));
        CHECK(r->length == (5u << 20) + 4096);
        CHECK(r->chunk_xxh3.size() == 3);
        s->keep_only({1});
    }
    auto want = expected_parity(codec.value(), images);
    CHECK(read_block(p0, 1) == want[0]);
    CHECK(read_block(p1, 1) == want[1]);

    // Epoch 2: member 1 changes 3 pages; only their old XOR new goes out.
    uint64_t sent = 0;
    for (auto* s : stores) REQUIRE(s->begin(2, 1).ok());
    for (size_t page : {0u, 17u, 1280u}) {
        Image delta(4096);
        for (size_t i = 0; i < 4096; ++i) {
            const uint8_t now = static_cast<uint8_t>(rng());
            delta[i] = images[1][page * 4096 + i] ^ now;
            images[1][page * 4096 + i] = now;
        }
        for (auto* s : stores) REQUIRE(s->apply(1, page * 4096, delta).ok());
        sent += delta.size();
    }
    CHECK(sent == 3 * 4096);
    for (auto* s : stores) {
        REQUIRE(s->finish().ok());
        s->keep_only({2});
        CHECK(s->epochs() == std::vector<uint64_t>{2});
    }
    want = expected_parity(codec.value(), images);
    CHECK(read_block(p0, 2) == want[0]);
    CHECK(read_block(p1, 2) == want[1]);

    // Epoch 3 aborts half-way: epoch 2 is untouched.
    REQUIRE(p0.begin(3, 2).ok());
    REQUIRE(p0.apply(0, 0, random_image(4096)).ok());
    p0.abort();
    CHECK(p0.epochs() == std::vector<uint64_t>{2});
    CHECK(read_block(p0, 2) == want[0]);
    CHECK_FALSE(fs::exists(dir / "set0.p0" / "000003.tmp"));

    // Members 0 and 2 lost: rebuilt from member 1 and both parity blocks.
    const size_t len = want[0].size();
    std::vector<Image> blocks = {Image(len, 0xEE), images[1], Image(len, 0xEE), read_block(p0, 2), read_block(p1, 2)};
    blocks[1].resize(len, 0);
    std::vector<uint8_t*> ptrs;
    for (auto& b : blocks) ptrs.push_back(b.data());
    const bool lost[] = {true, false, true, false, false};
    REQUIRE(codec->rebuild(ptrs, lost, len).ok());
    blocks[0].resize(images[0].size());
    blocks[2].resize(images[2].size());
    CHECK(blocks[0] == images[0]);
    CHECK(blocks[2] == images[2]);

    // A changed byte in the block, a forged record: refused.
    {
        std::fstream f(dir / "set0.p1" / "000002.img", std::ios::in | std::ios::out | std::ios::binary);
        f.seekp((2 << 20) + 5);
        f.put('\x55');
    }
    auto r1 = p1.record(2);
    REQUIRE(r1.ok());
    CHECK(message_of(p1.read_chunk(r1.value(), 1)).find("parity chunk 1 is corrupted") != std::string::npos);
    CHECK(p1.read_chunk(r1.value(), 0).ok());
    {
        std::ofstream(dir / "set0.p0" / "000002.json") << "{\"format\": \"vvmm-parity\", \"epoch\": 2, \"length\": 0, \"chunk_xxh3\": []}";
    }
    CHECK_FALSE(p0.record(2).ok());
    // Nothing to apply to without begin(); a member outside the set.
    CHECK(message_of(p0.apply(0, 0, random_image(16))).find("no parity epoch") != std::string::npos);
    REQUIRE(p1.begin(4, std::nullopt).ok());
    CHECK(message_of(p1.apply(3, 0, random_image(16))).find("not in this parity set") != std::string::npos);
    // Nothing past the set's longest image (64 MiB here), at any offset.
    CHECK(message_of(p1.apply(0, (64 << 20) - 8, random_image(16))).find("the longest image of the set") !=
          std::string::npos);
    CHECK_FALSE(p1.apply(0, ~0ull - 4, random_image(16)).ok());
    CHECK(p1.apply(0, (64 << 20) - 16, random_image(16)).ok());
    p1.abort();
    fs::remove_all(dir);
}
