#include "cli/cluster_commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "vmm/base/json_field.hpp"
#include "cli/cluster_format.hpp"
#include "cli/number_format.hpp"
#include "cli/session_exit.hpp"
#include "coord/cluster_client.hpp"
#include "coord/cluster_request.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/lost_nodes.hpp"
#include "vmm/base/process_group.hpp"
#include "coord/rebuild_exchange.hpp"
#include "vmm/base/duration_parse.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::cli {
namespace {

using nlohmann::json;

std::string fixed(double v, int decimals) { return format_fixed(v, decimals); }
std::string mib(double bytes) { return format_mib(bytes, 1); }

int fail(const Error& e)
{
    log_error(e.message());
    return 1;
}

Result<std::string> self_exe()
{
    std::error_code ec;
    const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) return Error("cannot find this program's path: " + ec.message());
    return p.string();
}

// The checkpoint of `vm` that epoch `epoch` recorded, if it is there and is
// the very one (its manifest's digest).
Result<std::string> epoch_checkpoint_of(const coord::ClusterConfig& config, const coord::ClusterManifest& epoch,
                                        const std::string& vm)
{
    const auto entry = std::find_if(epoch.vms.begin(), epoch.vms.end(), [&](const auto& e) { return e.name == vm; });
    if (entry == epoch.vms.end()) return Error("epoch " + std::to_string(epoch.epoch) + " has no checkpoint of VM '" + vm + "'");
    const coord::VmEntry* placed = config.vm(vm);
    if (!placed) return Error("no VM '" + vm + "' in " + config.file.string());
    const std::string root = config.node_checkpoint_dir(placed->node).string();
    const std::string dir = coord::vm_checkpoint_root(root, vm) + "/" + entry->id;
    const std::string which = "epoch " + std::to_string(epoch.epoch) + ": " + vm + "'s checkpoint " + dir;
    auto digest = coord::vm_manifest_digest(dir);
    if (!digest) return Error(which + " cannot be used (" + digest.error().message() + ")");
    if (digest.value() != entry->manifest_xxh3)
        return Error(which + " is not the one the epoch recorded (its manifest digest differs)");
    return dir;
}

// The checkpoint root this command reads epochs from: the node it runs for
// (--node, or --vm's node), else the first VM's; with storage = "disk" all
// are checkpoint_dir.
std::string local_root(const coord::ClusterConfig& config, const ClusterFlags& f)
{
    std::string node = f.node;
    if (node.empty() && !f.vm.empty() && config.vm(f.vm)) node = config.vm(f.vm)->node;
    if (node.empty() && !config.vms.empty()) node = config.vms.front().node;
    return config.node_checkpoint_dir(node).string();
}

// For `list` on a host where no VMM answers: the first node directory this
// host has (with storage = "memory" each host has its own node's only).
std::string first_local_root(const coord::ClusterConfig& config)
{
    for (const auto& n : config.nodes) {
        const auto root = config.node_checkpoint_dir(n.name);
        std::error_code ec;
        if (std::filesystem::is_directory(root, ec)) return root.string();
    }
    return config.node_checkpoint_dir(config.nodes.empty() ? "" : config.nodes.front().name).string();
}

std::string epoch_list(const coord::ClusterConfig& config, const ClusterFlags& f)
{
    std::string out;
    for (uint64_t e : coord::committed_epochs(local_root(config, f)))
        out += (out.empty() ? "" : ", ") + std::to_string(e);
    return out.empty() ? "none" : out;
}

// Whether `vm` is rebuilt from parity (then it has no checkpoint to check yet).
bool rebuilt_here(const std::optional<coord::RebuildContext>& rebuild, const std::string& vm)
{
    if (!rebuild) return false;
    for (const auto& r : rebuild->plan)
        if (std::find(r.lost_vms.begin(), r.lost_vms.end(), vm) != r.lost_vms.end()) return true;
    return false;
}

// One VMM process per VM of the node (or of every node), supervised until
// all have ended.
int launch(const coord::ClusterConfig& config, const ClusterFlags& f, const std::string& subcommand,
           const coord::ClusterManifest* restoring, const std::optional<coord::RebuildContext>& rebuild = std::nullopt)
{
    std::vector<const coord::VmEntry*> vms;
    if (!f.node.empty()) {
        if (!config.node(f.node)) return fail(Error("--node: no node '" + f.node + "' in " + config.file.string()));
        vms = config.vms_on(f.node);
        if (vms.empty()) return fail(Error("node '" + f.node + "' has no VMs in " + config.file.string()));
    } else {
        for (const auto& v : config.vms) vms.push_back(&v);
    }
    if (restoring) {
        // Before any VMM starts: a VM that cannot restore would leave the
        // others waiting for it.
        for (const auto* v : vms)
            if (auto dir = epoch_checkpoint_of(config, *restoring, v->name); !dir && !rebuilt_here(rebuild, v->name))
                return fail(Error("restore: " + dir.error().message() + "; committed epochs: " +
                                  epoch_list(config, f) + " (--epoch N restores another)"));
    }
    auto self = self_exe();
    if (!self) return fail(self.error());
    std::vector<ChildSpec> children;
    std::string names;
    for (const auto* v : vms) {
        std::vector<std::string> argv = {*self, subcommand, "--cluster", config.file.string(), "--vm", v->name};
        if (restoring) argv.insert(argv.end(), {"--epoch", std::to_string(restoring->epoch)});
        for (const auto& node : f.lost) argv.insert(argv.end(), {"--lost", node});
        if (f.verbose) argv.push_back("-v");
        if (f.verify_full) argv.insert(argv.end(), {"--verify", "full"});
        if (f.clock_advance) argv.insert(argv.end(), {"--clock", "advance"});
        if (f.trust_unsigned) argv.push_back("--trust-unsigned");
        children.push_back({v->name, std::move(argv)});
        names += (names.empty() ? "" : ", ") + v->name;
    }
    log_info("cluster '" + config.name + "': " + (subcommand == "run" ? "starting " : "restoring ") + names +
             (restoring ? " from epoch " + std::to_string(restoring->epoch) : "") + " (Ctrl-C stops them all)");
    ProcessGroupOptions options;
    // Restored VMs wait for each other before they resume: one that fails
    // would leave the others waiting for ever.
    options.stop_all_on_failure = restoring != nullptr;
    auto status = run_process_group(children, options);
    if (!status) return fail(status.error());
    return status.value();
}

Result<runtime::ClusterRole> role_of(const coord::ClusterConfig& config, const std::string& vm, uint64_t epoch)
{
    if (!config.vm(vm)) return Error("--vm: no VM '" + vm + "' in " + config.file.string());
    TRY_ASSIGN(auto secret, coord::read_cluster_secret(config));
    return runtime::ClusterRole{config, vm, std::move(secret), epoch};
}

int run_member(const coord::ClusterConfig& config, const std::string& vm, const std::string& api)
{
    auto role = role_of(config, vm, 0);
    if (!role) return fail(role.error());
    const vmm::VmDescription description = config.description(*config.vm(vm));
    if (auto r = vmm::validate_vm_description(description); !r) return fail(r.error().context(vm));
    auto session = runtime::VmSession::boot({description, api, std::move(role).value()});
    if (!session) return fail(session.error());
    return run_session(**session);
}

// The committed epoch to restore: the one asked for, or the latest.
Result<coord::ClusterManifest> epoch_to_restore(const coord::ClusterConfig& config, const ClusterFlags& f,
                                                const ckpt::SealPolicy& policy)
{
    std::optional<uint64_t> epoch = f.epoch;
    const std::string dir = local_root(config, f);
    if (!epoch) {
        const auto epochs = coord::committed_epochs(dir);
        if (epochs.empty()) return Error("no committed epoch in " + dir + " (vvmm checkpoint --all --cluster ...)");
        epoch = epochs.back();
    }
    TRY_ASSIGN(auto m, coord::read_cluster_manifest(dir, *epoch, policy));
    if (m.cluster != config.name)
        return Error("epoch " + std::to_string(*epoch) + " belongs to cluster '" + m.cluster + "', not '" + config.name + "'");
    for (const auto& v : config.vms) {
        const bool listed = std::any_of(m.vms.begin(), m.vms.end(), [&](const auto& e) { return e.name == v.name; });
        if (!listed) return Error("epoch " + std::to_string(*epoch) + " has no checkpoint of VM '" + v.name + "'");
    }
    if (m.vms.size() != config.vms.size())
        return Error("epoch " + std::to_string(*epoch) + " has VMs that " + config.file.string() + " does not");
    return m;
}

int restore_member(const coord::ClusterConfig& config, const std::string& vm, coord::ClusterManifest epoch,
                   const ClusterFlags& f, const std::string& api, std::optional<coord::RebuildContext> rebuild)
{
    auto role = role_of(config, vm, epoch.epoch);
    if (!role) return fail(role.error());
    if (rebuilt_here(rebuild, vm)) {
        // Long enough for the survivors to load theirs and send a few GiB.
        constexpr auto kRebuildTimeout = std::chrono::minutes(10);
        auto rebuilt = coord::rebuild_lost_vm(*rebuild, config, vm, role->secret, kRebuildTimeout);
        if (!rebuilt) return fail(rebuilt.error().context("restore: rebuilding " + vm + " from parity"));
        // The epoch as this node now records it: with the rebuilt checkpoint.
        auto recorded = coord::read_cluster_manifest(role->node_root(), epoch.epoch, ckpt::SealPolicy{rebuild->key, false});
        if (!recorded) return fail(recorded.error().context("restore"));
        epoch = std::move(recorded).value();
    }
    role->rebuild = std::move(rebuild);
    auto dir = epoch_checkpoint_of(config, epoch, vm);
    if (!dir) return fail(dir.error().context("restore"));
    runtime::RestoreRequest req;
    req.dir = dir.value();
    req.verify_full = f.verify_full;
    req.clock = f.clock_advance ? vmm::ClockMode::advance : vmm::ClockMode::keep;
    req.trust_unsigned = f.trust_unsigned;
    req.api_socket = api;
    req.console = "stdio";
    req.nics = {config.nic(*config.vm(vm))};
    req.cluster = std::move(role).value();
    auto session = runtime::VmSession::restore(req);
    if (!session) return fail(session.error().context("restore"));
    return run_session(**session);
}

// From the VMMs' `list` replies: the one that starts scheduled epochs (or any).
std::string describe_schedule(const json& vms)
{
    const json* chosen = nullptr;
    for (const auto& row : vms) {
        if (!row.contains("schedule") || !row["schedule"].is_object()) continue;
        if (!chosen || row["schedule"].value("starts_them", false)) chosen = &row;
    }
    if (!chosen) return "epochs: schedule unknown (no VMM reachable)";
    const json& s = (*chosen)["schedule"];
    const std::string why = s.value("why", std::string("?"));
    if (!s.contains("interval_s") || !s["interval_s"].is_number()) return "epochs: " + why;
    std::string out = "epochs by themselves: every " + format_duration(Seconds(s["interval_s"].get<double>())) + " (" + why + ")";
    if (s.value("starts_them", false))
        out += ", started by " + (*chosen).value("name", std::string("?")) + ", next in " +
               format_duration(Seconds(std::max(0.0, s.value("next_in_s", 0.0))));
    return out;
}

std::string describe_epoch(const json& m)
{
    std::string out = "epoch " + std::to_string(m.value("epoch", 0ull)) + " committed in " +
                      fixed(m.value("epoch_ms", 0.0), 1) + " ms (" + m.value("mode", std::string("?")) +
                      (m.value("incremental", false) ? ", incremental" : "") + "):";
    for (const auto& v : m.value("vms", json::array()))
        out += "\n  " + v.value("name", std::string("?")) + "  " + v.value("id", std::string("?")) + "  pause " +
               fixed(v.value("pause_ms", 0.0), 1) + " ms  total " + fixed(v.value("total_ms", 0.0), 0) + " ms  " +
               mib(v.value("bytes", 0.0)) + (v.value("incremental", false) ? "  incremental" : "");
    return out;
}

}  // namespace

void add_cluster_options(CLI::App* cmd, ClusterFlags& f, bool with_epoch)
{
    cmd->add_option("--cluster", f.file, "cluster configuration (cfg.toml): every VM of it, one VMM process each");
    cmd->add_option("--node", f.node, "with --cluster: only this node's VMs (run it on each host)");
    cmd->add_option("--vm", f.vm, "with --cluster: run this one VM in this process (what the launcher starts)");
    if (with_epoch)
        cmd->add_option("--lost", f.lost,
                        "with --cluster: a node that is gone (repeatable); its VMs are rebuilt from parity on the survivors");
    if (with_epoch)
        cmd->add_option("--epoch", f.epoch, "with --cluster: the committed epoch (default: the latest)")
            ->check([](const std::string& text) -> std::string {
                // Checked as text: CLI11 would read "-1" as 2^64 - 1.
                const bool digits = !text.empty() && text.size() <= 18 &&
                                    text.find_first_not_of("0123456789") == std::string::npos;
                if (digits && text.find_first_not_of('0') != std::string::npos) return "";
                return "takes an epoch number (1, 2, ...), not '" + text + "'";
            });
}

std::string given_flag(const std::vector<const CLI::Option*>& options)
{
    for (const CLI::Option* o : options)
        if (o->count() > 0) return o->get_name();
    return "";
}

int run_cluster(const ClusterFlags& f, const std::string& api_socket)
{
    auto config = coord::load_cluster_config(f.file);
    if (!config) return fail(config.error());
    if (!f.vm.empty()) return run_member(config.value(), f.vm, api_socket);
    if (!api_socket.empty()) return fail(Error("--api goes with --vm: each VM of a cluster has its own"));
    return launch(config.value(), f, "run", nullptr);
}

int restore_cluster(const ClusterFlags& f, const std::string& api_socket)
{
    auto config = coord::load_cluster_config(f.file);
    if (!config) return fail(config.error());
    auto secret = coord::read_cluster_secret(config.value());
    if (!secret) return fail(secret.error());
    const ckpt::SealKey key = ckpt::cluster_seal_key(secret.value(), config->name);
    const ckpt::SealPolicy policy{key, f.trust_unsigned};
    const coord::ClusterConfig original = config.value();
    if (!f.lost.empty()) {
        auto relocated = coord::relocate_lost(original, f.lost);
        if (!relocated) return fail(relocated.error().context("restore"));
        config = std::move(relocated->config);
        if (f.vm.empty())
            // A lost node is worth seeing by default, not only with -v.
            for (const auto& m : relocated->moved) log_warn("restore: " + m + " (its node is lost)");
        if (f.vm.empty() && !relocated->unprotected.empty())
            log_warn("restore: epochs after this restore are not protected by parity: " + relocated->unprotected);
    }
    if (!f.node.empty() && std::find(f.lost.begin(), f.lost.end(), f.node) != f.lost.end())
        return fail(Error("restore: --node " + f.node + " is one of the --lost nodes"));
    auto epoch = epoch_to_restore(config.value(), f, policy);
    if (!epoch) return fail(epoch.error().context("restore"));
    std::optional<coord::RebuildContext> rebuild;
    if (!f.lost.empty()) {
        // Before anything starts: a rebuild that cannot succeed says why.
        auto plan = coord::plan_rebuild(original, epoch.value(), f.lost);
        if (!plan) return fail(plan.error().context("restore"));
        rebuild = coord::RebuildContext{original, std::move(plan).value(), epoch.value(), key};
    }
    if (!f.vm.empty()) {
        if (!config->vm(f.vm)) return fail(Error("--vm: no VM '" + f.vm + "' in " + f.file));
        return restore_member(config.value(), f.vm, epoch.value(), f, api_socket, std::move(rebuild));
    }
    if (!api_socket.empty()) return fail(Error("--api goes with --vm: each VM of a cluster has its own"));
    return launch(config.value(), f, "restore", &epoch.value(), rebuild);
}

int checkpoint_cluster(const std::string& file, const ClusterCheckpointFlags& f)
{
    // The checkpoint runs on the VMMs' hosts: their files need not exist here.
    auto config = coord::load_cluster_config(file, false);
    if (!config) return fail(config.error());
    auto secret = coord::read_cluster_secret(config.value());
    if (!secret) return fail(secret.error());
    coord::ClusterRequest request{coord::ClusterCommand::checkpoint};
    if (!f.mode.empty()) request.mode = ckpt::parse_mode(f.mode).value();  // CLI11 checked the name
    request.incremental = f.incremental;
    request.timeout = std::chrono::seconds(f.timeout_s);
    auto reply = coord::ask_any_vm(config.value(), secret.value(), coord::to_json(request),
                                   std::chrono::seconds(f.timeout_s + 30));
    if (!reply) return fail(reply.error());
    const json& body = reply->body;
    const bool ok = body.value("ok", false);
    if (f.json_output) {
        std::printf("%s\n", body.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
        return ok ? 0 : 1;
    }
    if (!ok) return fail(Error(body.value("error", std::string("the epoch failed"))));
    std::printf("%s\n", describe_epoch(body).c_str());
    return 0;
}

std::function<int()> add_list_command(CLI::App& app)
{
    auto file = std::make_shared<std::string>();
    auto json_output = std::make_shared<bool>(false);
    CLI::App* cmd = app.add_subcommand("list", "List a cluster's VMs and its committed checkpoint epochs");
    cmd->add_option("--cluster", *file, "cluster configuration (cfg.toml)")->required();
    cmd->add_flag("--json", *json_output, "print JSON");
    return [cmd, file, json_output]() -> int {
        if (!cmd->parsed()) return -1;
        auto config = coord::load_cluster_config(*file, false);
        if (!config) return fail(config.error());
        auto secret = coord::read_cluster_secret(config.value());
        if (!secret) return fail(secret.error());
        json vms = json::array();
        std::optional<json> epochs;
        uint64_t omitted = 0;  // older epochs a VMM left out of its reply
        for (const auto& v : config->vms) {
            json row = {{"name", v.name}, {"node", v.node}, {"address", config->listen_address(v).to_string()}};
            auto reply = coord::ask_vm(config.value(), secret.value(), v.name,
                                        coord::to_json(coord::ClusterRequest{coord::ClusterCommand::list}),
                                        std::chrono::seconds(5));
            if (reply && reply->body.value("ok", false)) {
                row["state"] = reply->body["status"].value("state", std::string("?"));
                row["status"] = reply->body["status"];
                const json& peers = reply->body.contains("peers_connected") ? reply->body["peers_connected"] : json();
                row["peers_connected"] = peers.is_array() ? peers : json::array();
                if (reply->body.contains("schedule")) row["schedule"] = reply->body["schedule"];
                if (!epochs) {
                    epochs = reply->body.value("epochs", json::array());
                    omitted = vvmm::field_or<uint64_t>(reply->body, "epochs_omitted", 0);
                }
            } else {
                row["state"] = "not reachable";
                row["error"] = reply ? reply->body.value("error", std::string("?")) : reply.error().message();
            }
            vms.push_back(row);
        }
        const bool local = !epochs;
        if (local) {  // no VMM is up: what this host's checkpoint directory holds
            const ckpt::SealPolicy policy{ckpt::cluster_seal_key(secret.value(), config->name), false};
            epochs = coord::recent_epochs(first_local_root(config.value()), SIZE_MAX, policy).epochs;
        }
        if (*json_output) {
            const json out = {{"cluster", config->name}, {"vms", vms}, {"epochs", *epochs}, {"epochs_omitted", omitted},
                              {"epochs_from_local_files", local}, {"checkpoints", checkpoint_policy_json(config.value())}};
            std::printf("%s\n", out.dump(-1, ' ', false, json::error_handler_t::replace).c_str());
            return 0;
        }
        std::printf("cluster %s: %zu VM(s)\n", config->name.c_str(), config->vms.size());
        for (const auto& row : vms) {
            std::string line = "  " + row["name"].get<std::string>() + "  node " + row["node"].get<std::string>() + "  " +
                               row["address"].get<std::string>() + "  " + row["state"].get<std::string>();
            if (row.contains("status")) line += "  checkpoints=" + std::to_string(row["status"].value("checkpoints", 0));
            if (row.contains("peers_connected"))
                line += "  peers=" + std::to_string(row["peers_connected"].size()) + "/" + std::to_string(config->vms.size() - 1);
            if (row.contains("error")) line += "  (" + row["error"].get<std::string>() + ")";
            std::printf("%s\n", line.c_str());
        }
        std::printf("%s", describe_checkpoint_policy(config.value()).c_str());
        std::printf("%s\n", describe_schedule(vms).c_str());
        std::printf("committed epochs%s:\n", local ? " (from local files: no VMM reachable)" : "");
        if (omitted) std::printf("  (%llu older epochs not shown)\n", static_cast<unsigned long long>(omitted));
        if (epochs->empty() && !omitted) std::printf("  none\n");
        for (const auto& m : *epochs) {
            if (m.contains("error")) {
                std::printf("  %llu  unreadable: %s\n", m.value("epoch", 0ull), m["error"].get<std::string>().c_str());
                continue;
            }
            double bytes = 0, max_pause = 0, parity_bytes = 0;
            for (const auto& v : m["vms"]) {
                bytes += v.value("bytes", 0.0);
                parity_bytes += v.value("parity_bytes", 0.0);
                max_pause = std::max(max_pause, v.value("pause_ms", 0.0));
            }
            const size_t blocks = m.contains("parity") && m["parity"].is_array() ? m["parity"].size() : 0;
            const std::string parity =
                blocks ? "  parity: " + std::to_string(blocks) + " blocks, " + mib(parity_bytes) + " of changes sent" : "";
            std::printf("  %llu  %s  %s%s  %zu VMs  %s  epoch %s ms  max pause %s ms%s\n", m.value("epoch", 0ull),
                        m.value("created", std::string()).c_str(), m.value("mode", std::string()).c_str(),
                        m.value("incremental", false) ? " incremental" : "", m["vms"].size(), mib(bytes).c_str(),
                        fixed(m.value("epoch_ms", 0.0), 1).c_str(), fixed(max_pause, 1).c_str(), parity.c_str());
        }
        return 0;
    };
}

}  // namespace vvmm::cli
