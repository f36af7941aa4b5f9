// How `list` and `plan` show a cluster's checkpoint policy: where committed
// checkpoints live, the parity sets and which nodes hold their parity.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "coord/cluster_config.hpp"

namespace vvmm::cli {

// "storage: memory (/dev/shm/vvmm/c1/<node>), redundancy xor, sets of 3"
// and one line per parity set; ends with a newline.
std::string describe_checkpoint_policy(const coord::ClusterConfig& config);
nlohmann::json checkpoint_policy_json(const coord::ClusterConfig& config);

// Checkpoint memory per node, at most, for one committed epoch: its VMs'
// images (up to their RAM) and its parity blocks (as long as the set's
// largest member). {node: {"images": bytes, "parity": bytes}}.
nlohmann::json memory_per_node(const coord::ClusterConfig& config);

}  // namespace vvmm::cli
