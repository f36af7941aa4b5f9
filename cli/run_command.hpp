// `vvmm run`: flags, validation, building the machine, running it.
#pragma once

#include <CLI/CLI.hpp>

namespace vvmm::cli {

// Adds the subcommand; the returned function runs it and gives the exit status.
std::function<int()> add_run_command(CLI::App& app);

}  // namespace vvmm::cli
