#include "cli/plan_command.hpp"

#include <cmath>
#include <cstdio>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "coord/checkpoint_plan.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::cli {
namespace {

struct PlanFlags {
    std::string mtbf, epoch_cost, restart_cost = "0s", runtime;
    bool json_output = false;
};

struct PlanFigures {
    coord::FailureModel model;
    std::optional<Seconds> runtime;
};

Result<PlanFigures> figures(const PlanFlags& f)
{
    PlanFigures p;
    auto mtbf = parse_duration(f.mtbf);
    if (!mtbf) return mtbf.error().context("--mtbf");
    auto cost = parse_duration(f.epoch_cost);
    if (!cost) return cost.error().context("--epoch-cost");
    p.model = {mtbf.value(), cost.value(), Seconds(0)};
    if (f.restart_cost != "0s") {
        auto restart = parse_duration(f.restart_cost);
        if (!restart) return restart.error().context("--restart-cost");
        p.model.restart_cost = restart.value();
    }
    if (!f.runtime.empty()) {
        auto runtime = parse_duration(f.runtime);
        if (!runtime) return runtime.error().context("--runtime");
        p.runtime = runtime.value();
    }
    return p;
}

// A time that overflowed the model reads as what it means.
std::string readable(Seconds s)
{
    return std::isfinite(s.count()) && s.count() < 1e15 ? format_duration(s) : std::string("never, in practice");
}

nlohmann::json finite_or_null(Seconds s)
{
    return std::isfinite(s.count()) ? nlohmann::json(s.count()) : nlohmann::json(nullptr);
}

int print_plan(const PlanFigures& p, bool json_output)
{
    const auto& m = p.model;
    const Seconds interval = coord::daly_interval(m.epoch_cost, m.mtbf);
    nlohmann::json j = {{"interval_s", interval.count()},
                        {"mtbf_s", m.mtbf.count()},
                        {"epoch_cost_s", m.epoch_cost.count()},
                        {"restart_cost_s", m.restart_cost.count()}};
    std::string text = "checkpoint interval: " + format_duration(interval) + " of work between epochs (Daly; MTBF " +
                       format_duration(m.mtbf) + ", epoch cost " + format_duration(m.epoch_cost) + ")\n";
    if (p.runtime) {
        const Seconds none = coord::expected_completion_without_checkpoints(*p.runtime, m);
        const Seconds with = coord::expected_completion(*p.runtime, interval, m);
        j["runtime_s"] = p.runtime->count();
        j["expected_s"] = {{"none", finite_or_null(none)}, {"checkpointed", finite_or_null(with)}};
        text += "expected time for a run of " + format_duration(*p.runtime) + " (restart cost " +
                format_duration(m.restart_cost) + "):\n" + "  without checkpoints:      " + readable(none) + "\n" +
                "  checkpointing every " + format_duration(interval) + ": " + readable(with) + "\n";
    }
    if (json_output) std::printf("%s\n", j.dump().c_str());
    else std::printf("%s", text.c_str());
    return 0;
}

}  // namespace

std::function<int()> add_plan_command(CLI::App& app)
{
    auto f = std::make_shared<PlanFlags>();
    CLI::App* cmd = app.add_subcommand(
        "plan", "Checkpoint interval (Daly) and expected run time, from the MTBF and what an epoch costs");
    cmd->add_option("--mtbf", f->mtbf, "mean time between failures, e.g. 24h")->required();
    cmd->add_option("--epoch-cost", f->epoch_cost, "time one checkpoint epoch costs the job, e.g. 5m")->required();
    cmd->add_option("--restart-cost", f->restart_cost, "time a restore costs after a failure, e.g. 2m")->capture_default_str();
    cmd->add_option("--runtime", f->runtime, "failure-free length of the run, e.g. 48h: adds the expected completion times");
    cmd->add_flag("--json", f->json_output, "print one JSON object (interval_s, expected_s, ...)");
    return [cmd, f]() -> int {
        if (!cmd->parsed()) return -1;
        auto p = figures(*f);
        if (!p) {
            log_error(p.error().message());
            return 2;
        }
        return print_plan(p.value(), f->json_output);
    };
}

}  // namespace vvmm::cli
