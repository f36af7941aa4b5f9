// The cluster side of the CLI (cfg.toml): run and restore every VM of a node
// as one VMM process each, one VM of the cluster in this process (--vm, what
// the launcher runs), the coordinated checkpoint and the listing.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace vvmm::cli {

struct ClusterFlags {
    std::string file;   // cfg.toml
    std::string node;   // only this node's VMs (default: every node)
    std::string vm;     // run this one VM in this process
    std::optional<uint64_t> epoch;
    std::vector<std::string> lost;  // restore: nodes lost, their VMs rebuilt from parity
    bool verbose = false;
    // restore: passed on to every VM's VMM
    bool verify_full = false;
    bool clock_advance = false;
    bool trust_unsigned = false;
};

// Adds --node and --vm (and --epoch with `with_epoch`) to `cmd`.
void add_cluster_options(CLI::App* cmd, ClusterFlags& f, bool with_epoch);

// With --cluster, the VMs come from the cluster file: the first of `options`
// that was given anyway, as "--name" (empty: none). One place for run and
// restore, so that no flag is silently ignored.
std::string given_flag(const std::vector<const CLI::Option*>& options);

int run_cluster(const ClusterFlags& f, const std::string& api_socket);
int restore_cluster(const ClusterFlags& f, const std::string& api_socket);

struct ClusterCheckpointFlags {
    std::string mode;  // empty: the cluster's default
    bool incremental = false;
    unsigned timeout_s = 120;
    bool json_output = false;
};
int checkpoint_cluster(const std::string& file, const ClusterCheckpointFlags& f);

// `vvmm list --cluster cfg.toml [--json]`.
std::function<int()> add_list_command(CLI::App& app);

}  // namespace vvmm::cli
