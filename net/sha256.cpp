#include "net/sha256.hpp"

#include <algorithm>
#include <cstring>

namespace vvmm::net {
namespace {

constexpr uint32_t kRound[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

constexpr uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

uint32_t load_be32(const uint8_t* p)
{
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

void store_be32(uint8_t* p, uint32_t v)
{
    p[0] = static_cast<uint8_t>(v >> 24);
    p[1] = static_cast<uint8_t>(v >> 16);
    p[2] = static_cast<uint8_t>(v >> 8);
    p[3] = static_cast<uint8_t>(v);
}

}  // namespace

void Sha256::reset()
{
    state_ = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    block_used_ = 0;
    total_bytes_ = 0;
}

void Sha256::compress(const uint8_t* block)
{
    uint32_t w[64];
    for (int t = 0; t < 16; ++t) w[t] = load_be32(block + 4 * t);
    for (int t = 16; t < 64; ++t) {
        const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (int t = 0; t < 64; ++t) {
        const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + kRound[t] + w[t];
        const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    state_[0] += a;
    state_[1] += b;
    state_[2] += c;
    state_[3] += d;
    state_[4] += e;
    state_[5] += f;
    state_[6] += g;
    state_[7] += h;
}

void Sha256::update(std::span<const uint8_t> data)
{
    total_bytes_ += data.size();
    size_t i = 0;
    if (block_used_ > 0) {
        const size_t n = std::min(kBlockSize - block_used_, data.size());
        std::memcpy(block_.data() + block_used_, data.data(), n);
        block_used_ += n;
        i = n;
        if (block_used_ < kBlockSize) return;
        compress(block_.data());
        block_used_ = 0;
    }
    for (; data.size() - i >= kBlockSize; i += kBlockSize) compress(data.data() + i);
    if (i < data.size()) {
        std::memcpy(block_.data(), data.data() + i, data.size() - i);
        block_used_ = data.size() - i;
    }
}

Sha256Digest Sha256::finish()
{
    const uint64_t bits = total_bytes_ * 8;
    // Padding: 0x80, zeros up to 56 mod 64, then the length in bits (big-endian).
    uint8_t pad[kBlockSize + 8] = {0x80};
    const size_t zeros_to = block_used_ < 56 ? 56 : 56 + kBlockSize;
    const size_t pad_length = zeros_to - block_used_;
    for (int i = 0; i < 8; ++i) pad[pad_length + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    update(std::span<const uint8_t>(pad, pad_length + 8));

    Sha256Digest digest;
    for (int i = 0; i < 8; ++i) store_be32(digest.data() + 4 * i, state_[i]);
    reset();
    return digest;
}

Sha256Digest sha256(std::span<const uint8_t> data)
{
    Sha256 h;
    h.update(data);
    return h.finish();
}

Sha256Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message)
{
    // K0: the key, hashed first if longer than a block, zero-padded to a block.
    std::array<uint8_t, Sha256::kBlockSize> k0{};
    if (key.size() > Sha256::kBlockSize) {
        const Sha256Digest hashed = sha256(key);
        std::memcpy(k0.data(), hashed.data(), hashed.size());
    } else if (!key.empty()) {
        std::memcpy(k0.data(), key.data(), key.size());
    }
    std::array<uint8_t, Sha256::kBlockSize> pad;
    Sha256 inner;
    for (size_t i = 0; i < pad.size(); ++i) pad[i] = k0[i] ^ 0x36;
    inner.update(pad);
    inner.update(message);
    const Sha256Digest inner_digest = inner.finish();
    Sha256 outer;
    for (size_t i = 0; i < pad.size(); ++i) pad[i] = k0[i] ^ 0x5c;
    outer.update(pad);
    outer.update(inner_digest);
    // The padded key is the secret; do not leave it on the stack.
    explicit_bzero(k0.data(), k0.size());
    explicit_bzero(pad.data(), pad.size());
    return outer.finish();
}

bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b)
{
    if (a.size() != b.size()) return false;
    // volatile: the compiler may not turn the loop into an early-exit compare.
    volatile uint8_t diff = 0;
    for (size_t i = 0; i < a.size(); ++i) diff = diff | static_cast<uint8_t>(a[i] ^ b[i]);
    return diff == 0;
}

}  // namespace vvmm::net
