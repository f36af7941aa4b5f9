#include "cli/restore_command.hpp"

#include <memory>

#include "cli/cluster_commands.hpp"
#include "cli/session_exit.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::cli {

std::function<int()> add_restore_command(CLI::App& app)
{
    auto req = std::make_shared<runtime::RestoreRequest>();
    auto verify = std::make_shared<std::string>("lazy");
    auto clock = std::make_shared<std::string>("keep");
    auto verbose = std::make_shared<bool>(false);
    auto cluster = std::make_shared<ClusterFlags>();
    CLI::App* cmd = app.add_subcommand("restore", "Restart a VM from a checkpoint directory");
    const CLI::Option* dir = cmd->add_option("--dir", req->dir, "the checkpoint: DIR/<id> (required without --cluster)");
    cmd->add_option("--api", req->api_socket, "control API socket for the restored VM");
    const CLI::Option* console =
        cmd->add_option("--console", req->console, "stdio or file:PATH (default: stdio; the checkpoint's console path is not reopened)");
    cmd->add_option("--verify", *verify, "lazy: check each memory chunk when first used; full: check everything first")
        ->check(CLI::IsMember({"lazy", "full"}))
        ->capture_default_str();
    cmd->add_option("--clock", *clock, "keep: guest time continues from the checkpoint; advance: by the time stopped")
        ->check(CLI::IsMember({"keep", "advance"}))
        ->capture_default_str();
    const CLI::Option* key = cmd->add_option("--checkpoint-key", req->checkpoint_key,
                                             "key file the checkpoint was sealed with (default: ~/.config/vvmm/checkpoint.key)");
    const CLI::Option* checkpoint_dir = cmd->add_option(
        "--checkpoint-dir", req->checkpoint_dir,
        "where the restored VM's checkpoints go, the only directory its sandbox lets it write (default: the restored checkpoint's DIR)");
    cmd->add_flag("--trust-unsigned", req->trust_unsigned,
                  "restore a checkpoint whose seal is missing or does not match (it may name any host file as a disk)");
    cmd->add_flag("-v,--verbose", *verbose, "log debug messages");
    add_cluster_options(cmd, *cluster, true);
    return [cmd, req, verify, clock, verbose, cluster, dir, console, key, checkpoint_dir]() -> int {
        if (!cmd->parsed()) return -1;
        if (*verbose) set_log_level(LogLevel::debug);
        cluster->verbose = *verbose;
        if (!cluster->file.empty()) {
            // Each VM's console is its launcher's output, prefixed with its name.
            if (const std::string flag = given_flag({dir, console, key, checkpoint_dir}); !flag.empty()) {
                log_error("--cluster restores a committed epoch of every VM; " + flag + " does not apply");
                return 2;
            }
            cluster->verify_full = *verify == "full";
            cluster->clock_advance = *clock == "advance";
            cluster->trust_unsigned = req->trust_unsigned;
            return restore_cluster(*cluster, req->api_socket);
        }
        if (!cluster->node.empty() || !cluster->vm.empty() || cluster->epoch || !cluster->lost.empty()) {
            log_error("--node, --vm, --epoch and --lost go with --cluster");
            return 2;
        }
        if (req->dir.empty()) {
            log_error("--dir is required (or --cluster FILE)");
            return 2;
        }
        req->verify_full = *verify == "full";
        req->clock = *clock == "advance" ? vmm::ClockMode::advance : vmm::ClockMode::keep;
        auto session = runtime::VmSession::restore(*req);
        if (!session) {
            log_error("restore: " + session.error().message());
            return 1;
        }
        return run_session(**session);
    };
}

}  // namespace vvmm::cli
