// `vvmm plan`: the checkpoint interval and the expected run time, from
// figures (coord/checkpoint_plan.hpp).
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

namespace vvmm::cli {

std::function<int()> add_plan_command(CLI::App& app);

}  // namespace vvmm::cli
