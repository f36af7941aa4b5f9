#include "cli/plan_command.hpp"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "ckpt/manifest_seal.hpp"
#include "cli/cluster_format.hpp"
#include "coord/checkpoint_plan.hpp"
#include "coord/cluster_client.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/epoch_schedule.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::cli {
namespace {

struct PlanFlags {
    std::string cluster, mtbf, epoch_cost, disk_cost, diskless_cost, restart_cost, runtime;
    bool json_output = false;
};

// One way of checkpointing the run, and what an epoch of it costs (if known).
struct Strategy {
    std::string name;               // "disk", "diskless"
    std::optional<Seconds> cost;
    std::string cost_source;        // "--epoch-cost", "measured: median of the last 3 epochs", ...
};

struct PlanFigures {
    Seconds mtbf{0}, restart_cost{0};
    std::vector<Strategy> strategies;  // the first is the one the cluster (or the flags) use
    std::optional<Seconds> runtime;
    const coord::ClusterConfig* cluster = nullptr;
};

Result<std::optional<Seconds>> optional_duration(const std::string& text, const std::string& flag)
{
    if (text.empty()) return std::optional<Seconds>();
    if (flag == "--restart-cost" && text == "0s") return std::optional<Seconds>(Seconds(0));  // the default, written out
    auto d = parse_duration(text);
    if (!d) return d.error().context(flag);
    return std::optional<Seconds>(d.value());
}

// The median cost of the newest committed epochs this host has, if any.
std::optional<Strategy> measured_cost(const coord::ClusterConfig& config, const std::vector<uint8_t>& secret)
{
    const ckpt::SealPolicy policy{ckpt::cluster_seal_key(secret, config.name), false};
    for (const auto& n : config.nodes) {
        const std::string root = config.node_checkpoint_dir(n.name).string();
        const auto median = coord::median_epoch_cost(coord::recent_epoch_costs(root, policy));
        if (!median) continue;
        return Strategy{"", median->cost, "measured: median of the last " + std::to_string(median->of) + " epoch(s) in " + root};
    }
    return std::nullopt;
}

Result<PlanFigures> figures(const PlanFlags& f, std::optional<coord::ClusterConfig>& config)
{
    PlanFigures p;
    TRY_ASSIGN(auto mtbf, optional_duration(f.mtbf, "--mtbf"));
    TRY_ASSIGN(auto cost, optional_duration(f.epoch_cost, "--epoch-cost"));
    TRY_ASSIGN(auto disk, optional_duration(f.disk_cost, "--disk-cost"));
    TRY_ASSIGN(auto diskless, optional_duration(f.diskless_cost, "--diskless-cost"));
    TRY_ASSIGN(auto restart, optional_duration(f.restart_cost, "--restart-cost"));
    TRY_ASSIGN(p.runtime, optional_duration(f.runtime, "--runtime"));
    p.restart_cost = restart.value_or(Seconds(0));
    if (f.cluster.empty()) {
        if (!mtbf) return Error("--mtbf is required (or --cluster with mtbf in its file)");
        if (!cost) return Error("--epoch-cost is required (or --cluster, whose measured epochs give it)");
        p.mtbf = *mtbf;
        p.strategies.push_back({"checkpointed", cost, "--epoch-cost"});
        return p;
    }
    TRY_ASSIGN(config, coord::load_cluster_config(f.cluster, false));
    p.cluster = &*config;
    if (!mtbf) mtbf = config->mtbf;
    if (!mtbf) return Error("no MTBF: give --mtbf or set mtbf in " + config->file.string());
    p.mtbf = *mtbf;
    const bool memory = config->storage == coord::CheckpointStorage::memory;
    Strategy own{memory ? "diskless" : "disk", cost, "--epoch-cost"};
    if (!own.cost) own.cost_source = "--epoch-cost, or let the cluster take epochs first: their cost is measured";
    if (!own.cost) {
        if (memory ? diskless : disk) own = Strategy{own.name, memory ? diskless : disk, memory ? "--diskless-cost" : "--disk-cost"};
        else if (auto secret = coord::read_cluster_secret(*config); secret)
            if (auto m = measured_cost(*config, secret.value())) own = Strategy{own.name, m->cost, m->cost_source};
    }
    Strategy other{memory ? "disk" : "diskless", memory ? disk : diskless, memory ? "--disk-cost" : "--diskless-cost"};
    p.strategies = {own, other};
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
    nlohmann::json j = {{"mtbf_s", p.mtbf.count()}, {"restart_cost_s", p.restart_cost.count()}};
    std::string text;
    if (p.cluster) {
        text += "cluster " + p.cluster->name + ": " + std::to_string(p.cluster->vms.size()) + " VM(s) on " +
                std::to_string(p.cluster->nodes.size()) + " node(s)\n" + describe_checkpoint_policy(*p.cluster);
        j["cluster"] = p.cluster->name;
        j["checkpoints"] = checkpoint_policy_json(*p.cluster);
    }
    std::optional<Seconds> none;
    if (p.runtime) {
        none = coord::expected_completion_without_checkpoints(*p.runtime, {p.mtbf, Seconds(0), p.restart_cost});
        j["runtime_s"] = p.runtime->count();
        j["expected_s"] = {{"none", finite_or_null(*none)}};
    }
    nlohmann::json strategies = nlohmann::json::object();
    for (const auto& s : p.strategies) {
        const std::string label = p.cluster ? s.name + " checkpoints" : "checkpoint";
        if (!s.cost) {
            text += label + ": epoch cost not known (give " + s.cost_source + ")\n";
            continue;
        }
        const coord::FailureModel model{p.mtbf, *s.cost, p.restart_cost};
        const Seconds interval = coord::daly_interval(*s.cost, p.mtbf);
        text += label + " interval: " + format_duration(interval) + " of work between epochs (Daly; MTBF " +
                format_duration(p.mtbf) + ", epoch cost " + format_duration(*s.cost) +
                (s.cost_source == "--epoch-cost" ? "" : ", " + s.cost_source) + ")\n";
        nlohmann::json row = {{"interval_s", interval.count()}, {"epoch_cost_s", s.cost->count()}};
        if (p.runtime) {
            const Seconds with = coord::expected_completion(*p.runtime, interval, model);
            row["expected_s"] = finite_or_null(with);
            text += "  expected time for a run of " + format_duration(*p.runtime) + ": " + readable(with) + "\n";
        }
        if (p.cluster) strategies[s.name] = row;
        else j.update(row);  // the figures-only form keeps its flat fields
    }
    if (p.cluster) j["strategies"] = strategies;
    if (p.runtime) {
        if (!p.cluster) j["expected_s"] = {{"none", finite_or_null(*none)}, {"checkpointed", j["expected_s"]}};
        text += "without checkpoints, a run of " + format_duration(*p.runtime) + " (restart cost " +
                format_duration(p.restart_cost) + ") is expected to take " + readable(*none) + "\n";
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
    cmd->add_option("--cluster", f->cluster, "cluster configuration (cfg.toml): its mtbf, placement and measured epochs");
    cmd->add_option("--mtbf", f->mtbf, "mean time between failures, e.g. 24h");
    cmd->add_option("--epoch-cost", f->epoch_cost, "time one checkpoint epoch costs the job, e.g. 5m");
    cmd->add_option("--disk-cost", f->disk_cost, "with --cluster: an epoch's cost with storage = \"disk\"");
    cmd->add_option("--diskless-cost", f->diskless_cost, "with --cluster: an epoch's cost with storage = \"memory\"");
    cmd->add_option("--restart-cost", f->restart_cost, "time a restore costs after a failure, e.g. 2m (default 0)");
    cmd->add_option("--runtime", f->runtime, "failure-free length of the run, e.g. 48h: adds the expected completion times");
    cmd->add_flag("--json", f->json_output, "print one JSON object (interval_s, expected_s, ...)");
    return [cmd, f]() -> int {
        if (!cmd->parsed()) return -1;
        std::optional<coord::ClusterConfig> config;
        auto p = figures(*f, config);
        if (!p) {
            log_error(p.error().message());
            return 2;
        }
        return print_plan(p.value(), f->json_output);
    };
}

}  // namespace vvmm::cli
