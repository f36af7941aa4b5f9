#include "cli/control_commands.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/cluster_commands.hpp"
#include "cli/number_format.hpp"
#include "ckpt/checkpoint_mode.hpp"
#include "control/control_client.hpp"
#include "control/control_request.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::cli {

using nlohmann::json;

namespace {

std::optional<double> number(const json& j, const char* key)
{
    const auto it = j.is_object() ? j.find(key) : j.end();
    if (it == j.end() || !it->is_number()) return std::nullopt;
    return it->get<double>();
}

std::optional<std::string> text(const json& j, const char* key)
{
    const auto it = j.is_object() ? j.find(key) : j.end();
    if (it == j.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

std::string fixed(double v, int decimals) { return format_fixed(v, decimals); }
std::string mib(double bytes, int decimals) { return format_mib(bytes, decimals); }

struct ControlFlags {
    std::string api;
    bool json_output = false;
    std::string dir;
    std::string mode;  // default: stop (one VM), the cluster's mode (--all)
    bool incremental = false;
    bool all = false;
    std::string cluster;
    unsigned timeout_s = 120;
};

constexpr auto kShortTimeout = std::chrono::seconds(10);
// A stop-mode checkpoint of a large VM writes all of its RAM before replying.
constexpr auto kCheckpointTimeout = std::chrono::minutes(10);

// The VMM resolves "dir" against its own working directory, not the user's.
std::string absolute_dir(const std::string& dir)
{
    std::error_code ec;
    const auto abs = std::filesystem::absolute(dir, ec);
    return ec ? dir : abs.lexically_normal().string();
}

// Shows checkpoint paths under the current directory relative to it again.
void relativize_path(json& reply)
{
    if (!reply.is_object()) return;
    if (auto it = reply.find("last_checkpoint"); it != reply.end()) relativize_path(*it);
    const auto it = reply.find("path");
    if (it == reply.end() || !it->is_string()) return;
    std::error_code ec;
    const auto cwd = std::filesystem::current_path(ec);
    const std::filesystem::path p = it->get<std::string>();
    if (ec || !p.is_absolute()) return;
    const auto rel = p.lexically_relative(cwd);
    if (!rel.empty() && *rel.begin() != "..") *it = rel.string();
}

int run_request(const ControlFlags& f, const json& request, std::chrono::milliseconds timeout,
                const std::function<std::string(const json&)>& describe)
{
    auto reply = control::control_request(f.api, request, timeout);
    if (!reply) {
        log_error(reply.error().message());
        return 1;
    }
    const bool ok = reply->at("ok").get<bool>();  // control_request checked it is a bool
    if (f.json_output) {
        std::printf("%s\n", reply->dump(-1, ' ', false, json::error_handler_t::replace).c_str());
        return ok ? 0 : 1;
    }
    if (!ok) {
        log_error(text(*reply, "error").value_or("the VMM refused the request without saying why"));
        return 1;
    }
    relativize_path(*reply);
    std::printf("%s\n", describe(*reply).c_str());
    return 0;
}

CLI::App* add_control_subcommand(CLI::App& app, const char* name, const char* help, ControlFlags& f,
                                 bool api_required = true)
{
    CLI::App* sub = app.add_subcommand(name, help);
    auto* api = sub->add_option("--api", f.api, "control socket of the VMM (vvmm run --api PATH)");
    if (api_required) api->required();
    sub->add_flag("--json", f.json_output, "print the VMM's reply as JSON");
    return sub;
}

}  // namespace

std::string describe_status(const json& r)
{
    std::string out = text(r, "state").value_or("unknown");
    std::string details;
    auto add = [&](const std::string& s) { details += (details.empty() ? "" : "  ") + s; };
    if (auto v = number(r, "cpus")) add("cpus=" + fixed(*v, 0));
    if (auto v = number(r, "mem_bytes")) {
        add("mem=" + mib(*v, std::fmod(*v, 1024.0 * 1024.0) == 0 ? 0 : 1));
    }
    if (auto v = number(r, "uptime_s")) add("uptime=" + fixed(*v, 1) + " s");
    if (auto v = number(r, "checkpoints")) add("checkpoints=" + fixed(*v, 0));
    const auto last = r.is_object() ? r.find("last_checkpoint") : r.end();
    if (last != r.end() && last->is_object()) {
        std::string s = "last=" + text(*last, "path").value_or(text(*last, "id").value_or("?"));
        std::string in;
        auto part = [&](const std::string& p) { in += (in.empty() ? "" : ", ") + p; };
        if (auto m = text(*last, "mode")) part(*m);
        if (auto v = number(*last, "pause_ms")) part("pause " + fixed(*v, 1) + " ms");
        if (auto v = number(*last, "total_ms")) part("total " + fixed(*v, 0) + " ms");
        if (auto v = number(*last, "bytes_written")) part(mib(*v, 0));
        if (!in.empty()) s += " (" + in + ")";
        add(s);
    }
    return details.empty() ? out : out + "  " + details;
}

std::string describe_checkpoint(const json& r)
{
    std::string out = "checkpoint " + text(r, "path").value_or(text(r, "id").value_or("?")) + ":";
    if (auto m = text(r, "mode")) out += " mode=" + *m;
    if (auto v = number(r, "pause_ms")) out += " pause=" + fixed(*v, 1) + " ms";
    if (auto v = number(r, "total_ms")) out += " total=" + fixed(*v, 1) + " ms";
    if (auto v = number(r, "bytes_written")) out += " written=" + mib(*v, 1);
    const auto inc = r.is_object() ? r.find("incremental") : r.end();
    if (inc != r.end() && inc->is_boolean()) {
        if (inc->get<bool>()) {
            const auto parent = text(r, "parent");
            out += parent ? " (incremental, parent " + *parent + ")" : " (incremental)";
        } else {
            out += " (full)";
        }
    }
    return out;
}

std::function<int()> add_control_commands(CLI::App& app)
{
    auto f = std::make_shared<ControlFlags>();
    auto state_or = [](const char* fallback) {
        return [fallback](const json& r) { return text(r, "state").value_or(fallback); };
    };
    struct Simple {
        CLI::App* sub;
        control::ControlCommand cmd;
        std::function<std::string(const json&)> describe;
    };
    std::vector<Simple> simple = {
        {add_control_subcommand(app, "status", "Show the state of a running VMM", *f), control::ControlCommand::status, describe_status},
        {add_control_subcommand(app, "pause", "Pause a running VMM's vCPUs and devices", *f), control::ControlCommand::pause, state_or("paused")},
        {add_control_subcommand(app, "resume", "Resume a paused VMM", *f), control::ControlCommand::resume, state_or("running")},
        {add_control_subcommand(app, "stop", "Stop a running VMM (it exits with status 0)", *f),
         control::ControlCommand::stop,
         state_or("stopped")},
    };

    CLI::App* ckpt = add_control_subcommand(
        app, "checkpoint", "Checkpoint a running VMM into a directory, or a whole cluster (--all --cluster)", *f, false);
    ckpt->add_option("--dir", f->dir, "directory that holds this VM's checkpoints (each one in DIR/<id>); default: the VM's --checkpoint-dir, "
                    "which a sandboxed VM's DIR must be inside");
    ckpt->add_option("--mode", f->mode,
                     "stop: pause while saving; live: copy while running; cow: copy-on-write (default: stop, or the cluster's mode)")
        ->check(CLI::IsMember(std::vector<std::string>(ckpt::kCheckpointModeNames.begin(), ckpt::kCheckpointModeNames.end())));
    ckpt->add_flag("--incremental", f->incremental, "save only the pages written since the previous checkpoint");
    ckpt->add_flag("--all", f->all, "a coordinated checkpoint of every VM of the cluster (with --cluster)");
    ckpt->add_option("--cluster", f->cluster, "cluster configuration (cfg.toml); reached through any VMM's peer port");
    ckpt->add_option("--timeout", f->timeout_s, "with --all: seconds before the epoch is aborted")->capture_default_str();

    return [f, simple, ckpt]() -> int {
        if (ckpt->parsed() && (f->all || !f->cluster.empty())) {
            if (!f->all || f->cluster.empty() || !f->api.empty() || !f->dir.empty()) {
                log_error("a cluster checkpoint is `checkpoint --all --cluster FILE` (the directory is the cluster's; no --api or --dir)");
                return 2;
            }
            if (f->timeout_s == 0 || f->timeout_s > 3600) {
                log_error("--timeout: 1..3600 seconds");
                return 2;
            }
            return checkpoint_cluster(f->cluster, {f->mode, f->incremental, f->timeout_s, f->json_output});
        }
        if (ckpt->parsed()) {
            if (f->api.empty()) {
                log_error("checkpoint needs --api (or --all --cluster FILE)");
                return 2;
            }
            control::ControlRequest request{control::ControlCommand::checkpoint, f->dir.empty() ? "" : absolute_dir(f->dir)};
            if (!f->mode.empty()) request.mode = ckpt::parse_mode(f->mode).value();  // CLI11 checked the name
            request.incremental = f->incremental;
            return run_request(*f, control::to_json(request), kCheckpointTimeout, describe_checkpoint);
        }
        for (const auto& s : simple)
            if (s.sub->parsed()) return run_request(*f, control::to_json({s.cmd}), kShortTimeout, s.describe);
        return -1;
    };
}

}  // namespace vvmm::cli
