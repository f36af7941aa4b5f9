// Numbers as the CLI prints them: "12.3", "45.6 MiB". One room, so the
// commands that print them need not include each other.
#pragma once

#include <string>

namespace vvmm::cli {

std::string format_fixed(double v, int decimals);
std::string format_mib(double bytes, int decimals);

}  // namespace vvmm::cli
