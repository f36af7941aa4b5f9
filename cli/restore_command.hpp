// `vvmm restore --dir D/<id>`: restart a VM from a checkpoint.
#pragma once

#include <CLI/CLI.hpp>

namespace vvmm::cli {

std::function<int()> add_restore_command(CLI::App& app);

}  // namespace vvmm::cli
