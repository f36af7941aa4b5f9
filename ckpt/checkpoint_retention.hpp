// What is kept where when memory is the storage (diskless clusters): a
// node's checkpoint root keeps the newest committed checkpoint and the
// incremental chain it stands on, everything else goes, so its tmpfs holds
// one epoch (two while the next one runs); some epochs are also copied to
// persistent storage (cfg.toml's persist_every, persist_dir).
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
// `keep` or one of its ancestors; temporary directories of checkpoints being
// written are left alone. Returns how many were removed. `keep`'s chain is
// read through its sealed manifests: a chain that cannot be read removes
// nothing.
Result<unsigned> remove_outside_chain(const std::string& root, const std::string& keep, const SealPolicy& policy);

// Copies checkpoint `id` of `src_root` and its ancestors into `dst_root`,
// each one appearing under its id only once complete and durable (like a
// checkpoint). A checkpoint already in `dst_root` (copied with an earlier
// epoch) is kept if its manifest is the same, refused otherwise. Holes
// (zero pages) stay holes. Returns the bytes copied.
Result<uint64_t> copy_chain(const std::string& src_root, const std::string& id, const std::string& dst_root,
                            const SealPolicy& policy);

}  // namespace vvmm::ckpt
