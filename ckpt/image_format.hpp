// The units a checkpoint's memory image is written, checksummed and
// restored in: every part of ckpt/ that cuts memory into pages and chunks
// takes them from here.
#pragma once

#include <cstdint>

namespace vvmm::ckpt {

// 2: the VM description is structured (1 kept the --disk/--net flags' text).
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kChunkSize = 2ull << 20;  // unit of checksums and lazy restore
inline constexpr uint64_t kPagesPerChunk = kChunkSize / kPageSize;

}  // namespace vvmm::ckpt
