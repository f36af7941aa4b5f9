#include "cli/number_format.hpp"

#include <cstdio>

namespace vvmm::cli {

std::string format_fixed(double v, int decimals)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

std::string format_mib(double bytes, int decimals) { return format_fixed(bytes / (1024.0 * 1024.0), decimals) + " MiB"; }

}  // namespace vvmm::cli
