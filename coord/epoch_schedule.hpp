// When a cluster with `interval` in cfg.toml takes its next epoch, and which
// VMM starts it. Pure functions: every VMM computes the same answers from
// the same config, the peers it is connected to and the epoch costs it saw.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ckpt/manifest_seal.hpp"
#include "coord/cluster_config.hpp"

namespace vvmm::coord {

// Until an epoch has been measured, an automatic interval assumes this cost.
inline constexpr Seconds kAssumedEpochCost{1.0};
// Epoch costs (PREPARE to the last DONE) that the automatic interval uses:
// the median of the newest few, so one slow epoch does not swing it.
inline constexpr size_t kEpochCostWindow = 5;

struct EpochInterval {
    Seconds interval{0};
    std::string why;  // for `list`: "fixed in cfg.toml", "auto: Daly, MTBF 3 h, epoch cost 2.1 s (median of 5)"
};

// The costs (epoch_ms) of the newest kEpochCostWindow committed epochs in a
// node's checkpoint directory, oldest first; only those records are read.
std::vector<Seconds> recent_epoch_costs(const std::string& node_root, const ckpt::SealPolicy& policy);
// The median of the newest kEpochCostWindow of `costs`, and how many that was.
struct MedianCost {
    Seconds cost{0};
    size_t of = 0;
};
std::optional<MedianCost> median_epoch_cost(const std::vector<Seconds>& costs);

// Nothing for a cluster without `interval` (epochs only on request).
// `recent_costs`: the newest measured epoch costs, oldest first.
std::optional<EpochInterval> epoch_interval(const ClusterConfig& config, const std::vector<Seconds>& recent_costs);

// The VMM that starts scheduled epochs: the first VM in file order among
// `self` and the peers it is connected to. When it dies the next one in file
// order takes over once its peers see it gone.
bool starts_scheduled_epochs(const ClusterConfig& config, const std::string& self,
                             const std::vector<std::string>& connected_peers);

}  // namespace vvmm::coord
