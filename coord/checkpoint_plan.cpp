#include "coord/checkpoint_plan.hpp"

#include <cmath>

namespace vvmm::coord {

Seconds daly_interval(Seconds epoch_cost, Seconds mtbf)
{
    const double d = epoch_cost.count(), m = mtbf.count();
    if (d >= 2 * m) return mtbf;
    const double x = d / (2 * m);
    return Seconds(std::sqrt(2 * d * m) * (1 + std::sqrt(x) / 3 + x / 9) - d);
}

Seconds expected_completion(Seconds work, Seconds interval, const FailureModel& model)
{
    const double m = model.mtbf.count();
    const double segment = std::expm1((interval + model.epoch_cost).count() / m);
    return Seconds(m * std::exp(model.restart_cost.count() / m) * segment * work.count() / interval.count());
}

Seconds expected_completion_without_checkpoints(Seconds work, const FailureModel& model)
{
    const double m = model.mtbf.count();
    return Seconds(m * std::exp(model.restart_cost.count() / m) * std::expm1(work.count() / m));
}

}  // namespace vvmm::coord
