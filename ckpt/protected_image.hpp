// A VM checkpoint as diskless parity protects it (issue 12): one byte
// string per member VM and epoch,
//
//   [0, M)      guest memory as the checkpoint's chain holds it (M = the
//               memory image's size), zero where the guest has zeros
//   [M, M+H)    the xxh3 of each 2 MiB memory chunk (u64 LE), zero-padded
//               to a page: what a rebuilt chunk is checked against, itself
//               checked against the digest the cluster manifest records
//   [M+H, T)    the checkpoint's own small files packed (manifest.json,
//               state.bin, channels.bin if any), zero-padded to a page
//
// Parity is computed over it; a lost member's image is rebuilt from its
// set's survivors and parity, its memory written back as a full image and
// its files unpacked. Which memory chunks can differ from an earlier
// checkpoint of the same chain is known from the page maps, so an
// incremental epoch reads (and sends) only those.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ckpt/checkpoint_loader.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

// The side files in the image: name and bytes.
struct SideFile {
    std::string name;
    std::vector<uint8_t> bytes;
};
std::vector<uint8_t> pack_side_files(const std::vector<SideFile>& files);
Result<std::vector<SideFile>> unpack_side_files(std::span<const uint8_t> packed);

class ProtectedImage {
public:
    static Result<ProtectedImage> open(const std::string& checkpoint_dir, const SealPolicy& policy);

    uint64_t memory_bytes() const { return memory_bytes_; }
    uint64_t memory_chunks() const { return memory_bytes_ / kChunkSize; }
    uint64_t length() const { return memory_bytes_ + hash_region_bytes(memory_chunks()) + side_.size(); }
    uint64_t chunks() const { return (length() + kChunkSize - 1) / kChunkSize; }
    const std::string& id() const { return loaded_.manifest.id; }

    // Chunk `c` of the image (checked against the checkpoint's checksums);
    // the last may be shorter than kChunkSize. Chunks past memory need the
    // memory chunks' checksums first (set_memory_hashes).
    Result<std::vector<uint8_t>> read_chunk(uint64_t c);
    // The xxh3 of every memory chunk, as read (or known from the base epoch).
    Result<void> set_memory_hashes(std::vector<uint64_t> hashes);
    const std::vector<uint64_t>& memory_hashes() const { return memory_hashes_; }

    // The bytes the checksums take in the image.
    static uint64_t hash_region_bytes(uint64_t memory_chunks);
    // The longest image a VM with `memory_bytes` of RAM can have: what bounds
    // the offsets a holder or a rebuild accepts from the network.
    static uint64_t max_length(uint64_t memory_bytes);
    // Memory chunks that may differ from checkpoint `base_id` of the same
    // root: those holding pages of the chain's links newer than it; every
    // chunk if `base_id` is not in the chain. The side chunks always may.
    std::vector<bool> chunks_changed_since(const std::string& base_id) const;

private:
    ProtectedImage(LoadedCheckpoint loaded, std::vector<uint8_t> side);

    LoadedCheckpoint loaded_;
    uint64_t memory_bytes_ = 0;
    std::vector<uint8_t> side_;
    std::vector<uint64_t> memory_hashes_;  // empty until set
    std::vector<uint8_t> scratch_;
};

}  // namespace vvmm::ckpt
