// Opens a checkpoint for restore and checks it before anything runs: the
// manifest, the chain of parents, state.bin (size and checksum), page maps,
// memory image sizes. Memory chunks are checked later, one by one, before
// the guest sees them (or all up front with --verify full).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ckpt/manifest.hpp"
#include "ckpt/state_file.hpp"
#include "vmm/base/bitmap.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {

// One checkpoint of the chain, newest first.
struct ChainLink {
    std::string dir;
    Manifest manifest;
    UniqueFd memory_fd;
    std::optional<Bitmap> pages;  // nullopt: a full image
};

struct LoadedCheckpoint {
    std::string dir;
    Manifest manifest;  // of the checkpoint being restored
    std::vector<Section> sections;
    std::vector<ChainLink> chain;  // chain[0] is `dir`, the last one is full
};

Result<LoadedCheckpoint> load_checkpoint(const std::string& dir, const SealPolicy& policy);

// Builds chunk `c` (2 MiB at guest-physical c * 2 MiB) from the chain into
// `out`, checking every chunk it reads against its checksum. Returns whether
// the chunk is all zeros.
Result<bool> assemble_chunk(const std::vector<ChainLink>& chain, uint64_t c, std::span<uint8_t> out, std::vector<uint8_t>& scratch);

}  // namespace vvmm::ckpt
