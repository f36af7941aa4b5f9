// Parsing of human sizes such as "512M", "2G", "65536".
#pragma once

#include <cstdint>
#include <string_view>

#include "vmm/base/result.hpp"

namespace vvmm {

// Accepts a decimal number with an optional K/M/G/T suffix (binary units,
// case-insensitive, optional trailing "iB"/"B"). Rejects overflow and garbage.
Result<uint64_t> parse_size(std::string_view text);

std::string format_size(uint64_t bytes);

}  // namespace vvmm
