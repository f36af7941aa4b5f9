// Parsing of human durations such as "30s", "5m", "3h", "1.5d".
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "vmm/base/result.hpp"

namespace vvmm {

using Seconds = std::chrono::duration<double>;

// A positive decimal number and a unit: s, m (minutes), h or d. No unit, zero,
// a negative number, more than 100 years or anything else is an error.
Result<Seconds> parse_duration(std::string_view text);

// "45 s", "9.1 min", "1.95 h", "3.2 d": the unit that keeps the number readable.
std::string format_duration(Seconds d);

}  // namespace vvmm
