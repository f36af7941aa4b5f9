// The file-system side of a checkpoint: ids, the temporary directory, durable
// writes and the final rename. A checkpoint is visible under its id only
// once everything in it is on disk.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "ckpt/manifest.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

// Creates `root` if needed and removes temporary directories left behind
// by checkpoints whose process died.
Result<void> prepare_root(const std::string& root);
// The next id in `root` ("000001", "000002", ...).
Result<std::string> next_id(const std::string& root);
// Writes `bytes` to a new file and fsyncs it; returns its digest.
Result<FileDigest> write_durable(const std::string& dir, const std::string& name, std::span<const uint8_t> bytes);
Result<void> fsync_dir(const std::string& dir);
// Hard-links `src` into `dir` as `name` (O(1), shares the data).
Result<void> link_into(const std::string& src, const std::string& dir, const std::string& name);
// fsync tmp, rename it to root/id, fsync root.
Result<void> publish(const std::string& tmp, const std::string& root, const std::string& id);
// Copies the data of `src` into the new file `dst`, leaving holes where the
// source has them, and fsyncs it. Returns the bytes of data copied.
Result<uint64_t> copy_sparse_file(const std::string& src, const std::string& dst);
// Reads a whole file (state.bin, page maps) checking its size and digest.
Result<std::vector<uint8_t>> read_verified(const std::string& dir, const FileDigest& d, uint64_t max_size);
uint64_t digest_of(std::span<const uint8_t> bytes);
// The digest of a list of chunk checksums (as u64 LE bytes).
uint64_t digest_of_hashes(std::span<const uint64_t> hashes);

}  // namespace vvmm::ckpt
