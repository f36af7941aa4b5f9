// The cluster manifest of epoch E: which checkpoint of each VM belongs to
// the epoch. The initiator writes it once every VM's checkpoint is durable
// (with its channel state), and every VMM writes the same file in its own
// node's checkpoint directory on COMMIT, so any node can restore. An epoch
// exists exactly when its cluster manifest does.
//
// Layout of a node's checkpoint directory (cfg.toml's checkpoint_dir):
//   <vm>/<id>/          one VM's checkpoints (see ckpt/manifest.hpp)
//   epochs/<E>.json     committed epochs, E as 6 digits
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/manifest_seal.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::coord {

struct EpochVm {
    std::string name, node;
    std::string id;  // the VM's checkpoint, <checkpoint_dir>/<name>/<id>
    uint64_t manifest_xxh3 = 0;
    uint64_t bytes = 0;
    double pause_ms = 0, total_ms = 0;
    bool incremental = false;
    // Diskless parity (0 without): the length of the VM's protected image
    // (ckpt/protected_image.hpp), the digest of its memory chunks'
    // checksums, and the bytes of changes it sent each holder this epoch.
    uint64_t image_bytes = 0;
    uint64_t memory_bytes = 0;  // of the image, guest memory (the rest: checksums and state)
    uint64_t memory_hashes_xxh3 = 0;
    uint64_t parity_bytes = 0;
};

// One parity block of an epoch, as its holder finished it.
struct EpochParityBlock {
    uint32_t set = 0;
    unsigned index = 0;      // which of the set's K blocks
    std::string holder;      // the VM whose VMM keeps it, on the block's node
    uint64_t length = 0;
    uint64_t record_xxh3 = 0;  // digest of the block's chunk checksums (ckpt/parity_store.hpp)
};

struct ClusterManifest {
    std::string cluster;
    uint64_t epoch = 0;
    std::string mode;
    bool incremental = false;
    std::string created;  // UTC, ISO 8601
    double epoch_ms = 0;  // from PREPARE to the last DONE, at the initiator
    std::vector<EpochVm> vms;
    std::vector<EpochParityBlock> parity;  // empty without diskless parity
};

nlohmann::json to_json(const ClusterManifest& m);
nlohmann::json to_json(const EpochParityBlock& b);
Result<EpochParityBlock> parity_block_from_json(const nlohmann::json& j);
Result<ClusterManifest> cluster_manifest_from_json(const nlohmann::json& j);

std::string vm_checkpoint_root(const std::string& checkpoint_dir, const std::string& vm);
// Atomic and durable; writing the same epoch again (another VMM sharing the
// directory) replaces it with the same content. Sealed with `key` (the
// cluster's, ckpt/manifest_seal.hpp), checked against `policy` on reading.
Result<void> write_cluster_manifest(const std::string& checkpoint_dir, const ClusterManifest& m,
                                    const ckpt::SealKey& key);
Result<ClusterManifest> read_cluster_manifest(const std::string& checkpoint_dir, uint64_t epoch,
                                              const ckpt::SealPolicy& policy);
// Committed epochs in `checkpoint_dir`, ascending (none if it does not exist).
std::vector<uint64_t> committed_epochs(const std::string& checkpoint_dir);

// Removes the cluster manifests of epochs older than `epoch` (storage =
// memory keeps only the newest committed epoch once it is complete).
Result<void> remove_epochs_before(const std::string& checkpoint_dir, uint64_t epoch);

// The newest committed epochs whose manifests (as JSON; an unreadable one as
// {"epoch", "error"}) fit in `budget` bytes of JSON, oldest first, and how
// many older ones were left out: what `vvmm list` shows.
struct RecentEpochs {
    nlohmann::json epochs = nlohmann::json::array();
    uint64_t omitted = 0;
};
RecentEpochs recent_epochs(const std::string& checkpoint_dir, size_t budget, const ckpt::SealPolicy& policy);
// The digest a cluster manifest records for a VM checkpoint (xxh3 of its manifest.json).
Result<uint64_t> vm_manifest_digest(const std::string& vm_checkpoint_dir);

}  // namespace vvmm::coord
