#include "coord/epoch_schedule.hpp"

#include <algorithm>

#include "coord/checkpoint_plan.hpp"

namespace vvmm::coord {

std::optional<EpochInterval> epoch_interval(const ClusterConfig& config, const std::vector<Seconds>& recent_costs)
{
    switch (config.schedule.kind) {
    case EpochSchedule::Kind::on_request: return std::nullopt;
    case EpochSchedule::Kind::fixed:
        return EpochInterval{config.schedule.interval, "fixed in the cluster file"};
    case EpochSchedule::Kind::automatic: break;
    }
    const Seconds mtbf = config.mtbf.value_or(Seconds(24 * 3600));  // the config requires it; a default all the same
    std::vector<Seconds> window(recent_costs.end() - std::min(recent_costs.size(), kEpochCostWindow), recent_costs.end());
    Seconds cost = kAssumedEpochCost;
    std::string measured = "not measured yet, assumed " + format_duration(cost);
    if (!window.empty()) {
        std::sort(window.begin(), window.end());
        const size_t n = window.size();
        cost = n % 2 ? window[n / 2] : (window[n / 2 - 1] + window[n / 2]) / 2;
        measured = format_duration(cost) + " (median of the last " + std::to_string(n) + ")";
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
