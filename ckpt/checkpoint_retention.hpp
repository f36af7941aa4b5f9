// What is kept where when memory is the storage (diskless clusters): a
// node's checkpoint root keeps the two newest committed checkpoints and the
// incremental chains they stand on, everything else goes; some epochs are
// also copied to persistent storage (cfg.toml's persist_every, persist_dir).
#pragma once

#include <string>
#include <vector>

#include "ckpt/manifest_seal.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

// `id` and its ancestors, newest first, read through their sealed manifests.
Result<std::vector<std::string>> checkpoint_chain(const std::string& root, const std::string& id,
                                                  const SealPolicy& policy);

// Removes every checkpoint directory (six-digit id) in `root` that is not
// one of `keep` or their ancestors; temporary directories of checkpoints
// being written are left alone. Returns how many were removed. The chains
// are read through their sealed manifests: a chain that cannot be read
// removes nothing.
Result<unsigned> remove_outside_chains(const std::string& root, const std::vector<std::string>& keep,
                                       const SealPolicy& policy);

// Copies checkpoint `id` of `src_root` and its ancestors into `dst_root`,
// each one appearing under its id only once complete and durable (like a
// checkpoint). A checkpoint already in `dst_root` (copied with an earlier
// epoch) is kept if its manifest is the same, refused otherwise. Holes
// (zero pages) stay holes. Returns the bytes copied.
Result<uint64_t> copy_chain(const std::string& src_root, const std::string& id, const std::string& dst_root,
                            const SealPolicy& policy);

}  // namespace vvmm::ckpt
