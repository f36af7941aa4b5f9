// Parity for diskless checkpoints (ckpt/parity_codec, ISA-L): encoding,
// updates from dirty-page deltas, and rebuilding any K lost blocks.
#include <doctest/doctest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "ckpt/parity_codec.hpp"

using namespace vvmm;
using namespace vvmm::ckpt;

namespace {

using Block = std::vector<uint8_t>;

struct Set {
    std::vector<Block> blocks;  // N data, then K parity
    std::vector<uint8_t*> ptrs() { std::vector<uint8_t*> p; for (auto& b : blocks) p.push_back(b.data()); return p; }
};

Set random_set(const ParityCodec& c, size_t len, std::mt19937& rng)
{
    Set s;
    for (unsigned i = 0; i < c.data_blocks() + c.parity_blocks(); ++i) {
        Block b(len);
        if (i < c.data_blocks()) std::generate(b.begin(), b.end(), [&] { return static_cast<uint8_t>(rng()); });
        s.blocks.push_back(std::move(b));
    }
    auto p = s.ptrs();
    c.encode({p.data(), c.data_blocks()}, {p.data() + c.data_blocks(), c.parity_blocks()}, len);
    return s;
}

}  // namespace

TEST_CASE("parity codec: XOR parity is the XOR of the blocks")
{
    auto c = ParityCodec::create(ParityCodec::Kind::xor_parity, 3, 1);
    REQUIRE(c);
    std::mt19937 rng(1);
    Set s = random_set(c.value(), 4096, rng);
    for (size_t i = 0; i < 4096; ++i) CHECK_EQ(s.blocks[3][i], s.blocks[0][i] ^ s.blocks[1][i] ^ s.blocks[2][i]);
}

TEST_CASE("parity codec: any K lost blocks (data or parity) are rebuilt exactly, for XOR and RS 1..4")
{
    std::mt19937 rng(20261203);
    struct Shape { ParityCodec::Kind kind; unsigned n, k; };
    const Shape shapes[] = {{ParityCodec::Kind::xor_parity, 1, 1}, {ParityCodec::Kind::xor_parity, 4, 1},
                            {ParityCodec::Kind::reed_solomon, 3, 2}, {ParityCodec::Kind::reed_solomon, 8, 3},
                            {ParityCodec::Kind::reed_solomon, 5, 4}};
    for (const auto& shape : shapes) {
        auto c = ParityCodec::create(shape.kind, shape.n, shape.k);
        REQUIRE(c);
        for (int round = 0; round < 40; ++round) {
            const size_t len = 1 + rng() % 9000;
            Set s = random_set(c.value(), len, rng);
            const auto original = s.blocks;
            std::vector<bool> lost_v(shape.n + shape.k);
            const unsigned losses = 1 + rng() % shape.k;
            for (unsigned l = 0; l < losses; ++l) lost_v[rng() % lost_v.size()] = true;
            for (size_t i = 0; i < lost_v.size(); ++i)
                if (lost_v[i]) std::fill(s.blocks[i].begin(), s.blocks[i].end(), uint8_t{0xEE});
            std::unique_ptr<bool[]> flags(new bool[lost_v.size()]);
            for (size_t i = 0; i < lost_v.size(); ++i) flags[i] = lost_v[i];
            auto p = s.ptrs();
            CAPTURE(shape.n);
            CAPTURE(shape.k);
            REQUIRE(c->rebuild(p, {flags.get(), lost_v.size()}, len));
            CHECK(s.blocks == original);
        }
    }
}

TEST_CASE("parity codec: folding a block's delta (old XOR new) gives the parity of the new data")
{
    auto c = ParityCodec::create(ParityCodec::Kind::reed_solomon, 4, 2);
    REQUIRE(c);
    std::mt19937 rng(7);
    const size_t len = 8192;
    Set s = random_set(c.value(), len, rng);
    // Block 2 changes in one page; only that page's delta reaches the parity holders.
    Block delta(len, 0);
    for (size_t i = 4096; i < 8192; ++i) {
        const uint8_t now = static_cast<uint8_t>(rng());
        delta[i] = s.blocks[2][i] ^ now;
        s.blocks[2][i] = now;
    }
    auto p = s.ptrs();
    c->update(2, delta.data() + 4096, {std::vector<uint8_t*>{p[4] + 4096, p[5] + 4096}.data(), 2}, 4096);
    Set fresh = s;
    auto q = fresh.ptrs();
    c->encode({q.data(), 4}, {q.data() + 4, 2}, len);
    CHECK(s.blocks[4] == fresh.blocks[4]);
    CHECK(s.blocks[5] == fresh.blocks[5]);
}

TEST_CASE("parity codec: more losses than parity, and impossible shapes, are refused")
{
    auto c = ParityCodec::create(ParityCodec::Kind::reed_solomon, 3, 2);
    REQUIRE(c);
    std::mt19937 rng(3);
    Set s = random_set(c.value(), 100, rng);
    bool lost[5] = {true, true, false, true, false};
    auto p = s.ptrs();
    CHECK(c->rebuild(p, lost, 100).error().message() == "3 blocks of the set are lost; its 2 parity block(s) can rebuild at most 2");
    CHECK(!ParityCodec::create(ParityCodec::Kind::xor_parity, 3, 2));
    CHECK(!ParityCodec::create(ParityCodec::Kind::reed_solomon, 3, 5));
    CHECK(!ParityCodec::create(ParityCodec::Kind::reed_solomon, 0, 1));
    CHECK(!ParityCodec::create(ParityCodec::Kind::reed_solomon, 33, 1));
}
