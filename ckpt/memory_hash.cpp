#include "ckpt/memory_hash.hpp"

#include <xxhash.h>

#include <cstring>

#include "ckpt/image_format.hpp"

namespace vvmm::ckpt {

bool page_is_zero(const uint8_t* page)
{
    const auto* w = reinterpret_cast<const uint64_t*>(page);
    uint64_t acc = 0;
    for (size_t i = 0; i < kPageSize / 8; i += 8)
        acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
    return acc == 0;
}

uint64_t page_hash(const uint8_t* page) { return XXH3_64bits(page, kPageSize); }

uint64_t zero_page_hash()
{
    static const uint64_t h = [] {
        static const uint8_t zero[kPageSize] = {};
        return XXH3_64bits(zero, kPageSize);
    }();
    return h;
}

uint64_t zero_chunk_hash()
{
    static const uint64_t h = [] {
        std::vector<uint64_t> folded(kPagesPerChunk, zero_page_hash());
        return XXH3_64bits(folded.data(), folded.size() * sizeof(uint64_t));
    }();
    return h;
}

std::vector<std::optional<uint64_t>> fold_chunk_hashes(const std::vector<uint64_t>& page_hashes, const Bitmap& pages)
{
    const uint64_t chunks = page_hashes.size() / kPagesPerChunk;
    std::vector<std::optional<uint64_t>> out(chunks);
    std::vector<uint64_t> folded(kPagesPerChunk);
    for (uint64_t c = 0; c < chunks; ++c) {
        if (!pages.any_in(c * kPagesPerChunk, kPagesPerChunk)) continue;
        for (uint64_t p = 0; p < kPagesPerChunk; ++p) {
            const uint64_t i = c * kPagesPerChunk + p;
            folded[p] = pages.test(i) ? page_hashes[i] : zero_page_hash();
        }
        out[c] = XXH3_64bits(folded.data(), folded.size() * sizeof(uint64_t));
    }
    return out;
}

uint64_t chunk_hash(std::span<const uint8_t> chunk)
{
    std::vector<uint64_t> folded(kPagesPerChunk);
    for (uint64_t p = 0; p < kPagesPerChunk; ++p) {
        const uint8_t* page = chunk.data() + p * kPageSize;
        folded[p] = page_is_zero(page) ? zero_page_hash() : page_hash(page);
    }
    return XXH3_64bits(folded.data(), folded.size() * sizeof(uint64_t));
}

}  // namespace vvmm::ckpt
