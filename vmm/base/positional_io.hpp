// Whole reads and writes at an offset (pread/pwrite until done, EINTR
// retried), for files that grow as they are written: a read past the end
// yields zeros.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"

namespace vvmm {

// `len` bytes at `offset` of `fd`; zeros past the file's end. `what` names the file in errors.
Result<void> read_at_or_zero(int fd, uint8_t* out, size_t len, uint64_t offset, const std::string& what);
Result<void> write_all_at(int fd, const uint8_t* in, size_t len, uint64_t offset, const std::string& what);

}  // namespace vvmm
