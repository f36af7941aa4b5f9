// The cluster's control plane, typed: what a controller asks a cluster VMM
// (`vvmm checkpoint --all`, `list`) and the options an epoch's PREPARE
// carries from its initiator to the other VMMs. Each is defined here once,
// parsed once where it arrives (the VMM's ClusterMember), and built from the
// same type where it is sent (the CLI, the initiator).
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint_mode.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::coord {

inline constexpr std::chrono::seconds kDefaultEpochTimeout{120};
inline constexpr std::chrono::seconds kMaxEpochTimeout{3600};

enum class ClusterCommand { status, list, checkpoint };

struct ClusterRequest {
    ClusterCommand cmd = ClusterCommand::status;
    // checkpoint only; no mode: the cluster file's
    std::optional<ckpt::CheckpointMode> mode;
    bool incremental = false;
    std::chrono::seconds timeout = kDefaultEpochTimeout;  // 1 s .. kMaxEpochTimeout
};

// Refuses unknown commands and fields and out-of-range values, with the
// one-line error the controller gets.
Result<ClusterRequest> parse_cluster_request(const nlohmann::json& request);
// "mode" only if set; the rest only for checkpoint.
nlohmann::json to_json(const ClusterRequest& request);

// PREPARE's body: how the epoch is taken, and who started it.
struct EpochPrepare {
    ckpt::CheckpointMode mode = ckpt::CheckpointMode::stop;
    bool incremental = false;
    std::chrono::milliseconds timeout = kDefaultEpochTimeout;  // 1 ms .. kMaxEpochTimeout
    std::string initiator;
    // Diskless parity: the committed epoch whose parity this epoch's changes
    // are against (0: none, every block is encoded from zeros).
    uint64_t parity_base = 0;
};

Result<EpochPrepare> parse_epoch_prepare(const nlohmann::json& body);
nlohmann::json to_json(const EpochPrepare& prepare);

}  // namespace vvmm::coord
