// A checkpoint manifest names files that restore opens as root (disk bases),
// so it is sealed with an HMAC-SHA256 under a key its owner holds: a key
// file for single VMs, a key derived from the cluster secret for clusters.
// Restore refuses a manifest whose seal is missing or wrong unless the user
// says --trust-unsigned. The seal covers the manifest only; the files it
// lists are covered by their checksums in it (xxh3: they catch damage, not
// forgery, and their contents are guest data restore validates anyway).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

struct SealKey {
    std::vector<uint8_t> bytes;
    std::string source;  // for messages: "key file PATH" or "cluster 'c1' secret"
};

// How restore treats seals: no key with trust_unsigned restores without checking.
struct SealPolicy {
    std::optional<SealKey> key;
    bool trust_unsigned = false;
};

// ${XDG_CONFIG_HOME:-$HOME/.config}/vvmm/checkpoint.key
Result<std::string> default_key_path();
// The key in `path` (64 hex digits); the file must not be accessible to
// group or others. With `create`, a missing file is made (directories 0700,
// file 0600, 32 random bytes) without racing another vvmm doing the same.
Result<SealKey> load_key_file(const std::string& path, bool create);
SealKey cluster_seal_key(std::span<const uint8_t> secret, std::string_view cluster);

// Adds the "mac" field over the rest of the manifest.
void seal_manifest(nlohmann::json& manifest, const SealKey& key);
// Checks `manifest` (read from `path`) against the policy: a missing or
// wrong seal is an error, or a warning with trust_unsigned.
Result<void> check_manifest_seal(const nlohmann::json& manifest, const SealPolicy& policy, const std::string& path);

}  // namespace vvmm::ckpt
