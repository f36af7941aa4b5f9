// Reading a whole small file that a user or another host handed us (a
// config, a secret, a manifest): it must be a regular file of at most `max`
// bytes, so a directory, a FIFO or /dev/zero gives one clear error instead
// of a hang, an exception or unbounded memory.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"

namespace vvmm {

// `what` names the file in errors, e.g. "cluster config".
Result<std::string> read_small_file(const std::string& path, uint64_t max, const std::string& what);

}  // namespace vvmm
