// How memory.img is checksummed: an xxh3 per 4 KiB page (a zero page has a
// fixed hash), and per 2 MiB chunk the xxh3 of its 512 page hashes. Writers
// can then update single pages; readers check a whole chunk before the
// guest sees any of it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "vmm/base/bitmap.hpp"

namespace vvmm::ckpt {

bool page_is_zero(const uint8_t* page);
uint64_t page_hash(const uint8_t* page);
uint64_t zero_page_hash();
// The checksum of a chunk of zeros.
uint64_t zero_chunk_hash();
// Chunks with no page in `pages` get nullopt.
std::vector<std::optional<uint64_t>> fold_chunk_hashes(const std::vector<uint64_t>& page_hashes, const Bitmap& pages);
// The checksum of one 2 MiB chunk as read from memory.img.
uint64_t chunk_hash(std::span<const uint8_t> chunk);

}  // namespace vvmm::ckpt
