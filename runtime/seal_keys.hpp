// The key a VM's checkpoints are sealed with (ckpt/manifest_seal.hpp): a
// cluster's comes from its secret (every node can check every VM's), a
// single VM's from the user's key file.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "ckpt/manifest_seal.hpp"
#include "runtime/vm_session.hpp"

namespace vvmm::runtime {

using SealKeySource = std::function<Result<ckpt::SealKey>()>;

// `create`: a missing key file is made (a VM that checkpoints), not refused.
SealKeySource seal_key_source(const std::optional<ClusterRole>& cluster, const std::string& key_file, bool create);

// The source a session's checkpointer uses. With the sandbox, the key is read
// (or created) now, before the file system is restricted, not at the first
// checkpoint. `loaded`: the key restore already checked the checkpoint with.
Result<SealKeySource> seal_key_for_session(const std::optional<ClusterRole>& cluster, const std::string& key_file,
                                           const std::string& checkpoint_dir,
                                           const std::optional<ckpt::SealKey>& loaded = {});

}  // namespace vvmm::runtime
