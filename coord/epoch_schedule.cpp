#include "coord/epoch_schedule.hpp"

#include <algorithm>

#include "coord/checkpoint_plan.hpp"
#include "coord/cluster_manifest.hpp"

namespace vvmm::coord {

std::vector<Seconds> recent_epoch_costs(const std::string& node_root, const ckpt::SealPolicy& policy)
{
    const auto epochs = committed_epochs(node_root);
    std::vector<Seconds> costs;
    for (size_t i = epochs.size() - std::min(epochs.size(), kEpochCostWindow); i < epochs.size(); ++i)
        if (auto m = read_cluster_manifest(node_root, epochs[i], policy)) costs.push_back(Seconds(m->epoch_ms / 1000));
    return costs;
}

std::optional<MedianCost> median_epoch_cost(const std::vector<Seconds>& costs)
{
    std::vector<Seconds> window(costs.end() - std::min(costs.size(), kEpochCostWindow), costs.end());
    if (window.empty()) return std::nullopt;
    std::sort(window.begin(), window.end());
    const size_t n = window.size();
    return MedianCost{n % 2 ? window[n / 2] : (window[n / 2 - 1] + window[n / 2]) / 2, n};
}

std::optional<EpochInterval> epoch_interval(const ClusterConfig& config, const std::vector<Seconds>& recent_costs)
{
    switch (config.schedule.kind) {
    case EpochSchedule::Kind::on_request: return std::nullopt;
    case EpochSchedule::Kind::fixed:
        return EpochInterval{config.schedule.interval, "fixed in the cluster file"};
    case EpochSchedule::Kind::automatic: break;
    }
    const Seconds mtbf = config.mtbf.value_or(Seconds(24 * 3600));  // the config requires it; a default all the same
    Seconds cost = kAssumedEpochCost;
    std::string measured = "not measured yet, assumed " + format_duration(cost);
    if (const auto median = median_epoch_cost(recent_costs)) {
        cost = median->cost;
        measured = format_duration(cost) + " (median of the last " + std::to_string(median->of) + ")";
    }
    const Seconds interval = daly_interval(cost, mtbf);
    return EpochInterval{interval, "auto: Daly's interval for MTBF " + format_duration(mtbf) + " and epoch cost " + measured};
}

bool starts_scheduled_epochs(const ClusterConfig& config, const std::string& self,
                             const std::vector<std::string>& connected_peers)
{
    for (const auto& v : config.vms) {
        if (v.name == self) return true;
        if (std::find(connected_peers.begin(), connected_peers.end(), v.name) != connected_peers.end()) return false;
    }
    return false;
}

}  // namespace vvmm::coord
