// `vvmm status|pause|resume|stop|checkpoint --api PATH`: ask a running VMM
// over its control socket (control/control_server.hpp) and print the answer.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace vvmm::cli {

// Adds the subcommands; the returned function runs whichever was parsed and
// gives the exit status, or -1 if none of them was.
std::function<int()> add_control_commands(CLI::App& app);

// One-line human descriptions of replies; fields that are absent or of the
// wrong type are left out.
std::string describe_status(const nlohmann::json& reply);
std::string describe_checkpoint(const nlohmann::json& reply);

}  // namespace vvmm::cli
