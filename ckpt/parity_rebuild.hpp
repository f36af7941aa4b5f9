// Rebuilding the lost members of one parity set (diskless checkpoints,
// issue 12). What survives arrives in any order and in pieces: each
// surviving member's protected image and each surviving parity block used
// are folded, as they come, into one residual per block used (the parity
// less the survivors' share: the lost members' share alone), kept in files.
// Then each lost image is solved chunk by chunk and written back as a full
// checkpoint, every chunk checked before it is used:
//   the memory chunks' checksums against the digest the epoch recorded,
//   each memory chunk against its checksum,
//   manifest.json against the digest the epoch recorded (and its seal),
//   state.bin and channels.bin by restore, against the manifest.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "ckpt/manifest_seal.hpp"
#include "ckpt/parity_codec.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {

class ParityRebuild {
public:
    // `lost`: member indices to rebuild; `parity_used`: as many surviving
    // parity block indices; residual files go to `work_dir`; no data past
    // `max_bytes` (the longest image of the set) is taken.
    static Result<ParityRebuild> create(const ParityCodec& codec, std::vector<unsigned> lost,
                                        std::vector<unsigned> parity_used, const std::string& work_dir,
                                        uint64_t max_bytes);

    // Bytes at `offset` of surviving member `member`'s image.
    Result<void> add_member(unsigned member, uint64_t offset, std::span<const uint8_t> data);
    // Bytes at `offset` of parity block `parity_index`.
    Result<void> add_parity(unsigned parity_index, uint64_t offset, std::span<const uint8_t> data);
    // Chunk `c` (kChunkSize bytes) of each lost member's image, in `lost` order.
    Result<std::vector<std::vector<uint8_t>>> solve_chunk(uint64_t c) const;

    const std::vector<unsigned>& lost() const { return lost_; }

private:
    ParityRebuild(const ParityCodec& codec, std::vector<unsigned> lost, std::vector<unsigned> parity_used,
                  uint64_t max_bytes)
        : codec_(&codec), lost_(std::move(lost)), parity_used_(std::move(parity_used)), max_bytes_(max_bytes) {}
    Result<void> fold(size_t residual, uint64_t offset, std::span<const uint8_t> data, int member);

    const ParityCodec* codec_;
    std::vector<unsigned> lost_, parity_used_;
    uint64_t max_bytes_;
    std::vector<UniqueFd> residuals_;  // one per parity block used
    std::vector<uint8_t> buffer_;
};

// What the epoch recorded about the image being rebuilt.
struct RebuildTarget {
    std::string id;               // the checkpoint's id
    uint64_t memory_bytes = 0;
    uint64_t image_bytes = 0;
    uint64_t memory_hashes_xxh3 = 0;
    uint64_t manifest_xxh3 = 0;
};

// Writes the image that `chunk(c)` yields as the full checkpoint
// root/<id> (published complete, or not at all) and returns the digest
// of its new manifest.json (full, no parent, sealed with `key`).
Result<uint64_t> write_rebuilt_checkpoint(const std::string& root, const RebuildTarget& target,
                                          const std::function<Result<std::vector<uint8_t>>(uint64_t)>& chunk,
                                          const SealKey& key);

}  // namespace vvmm::ckpt
