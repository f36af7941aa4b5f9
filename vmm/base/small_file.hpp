// Reading a whole small file that a user or another host handed us (a
// config, a secret, a manifest): it must be a regular file of at most `max`
// bytes, so a directory, a FIFO or /dev/zero gives one clear error instead
// of a hang, an exception or unbounded memory.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm {

// Paths the user named may be symbolic links; files inside a checkpoint
// directory may not (DESIGN.md, "Trust": restore opens only paths the user
// names or files inside the checkpoint, and a planted link would lead out).
enum class Symlinks { follow, refuse };

// `what` names the file in errors, e.g. "cluster config". `info`, if given,
// gets the fstat of the very file read (e.g. to check its mode).
Result<std::string> read_small_file(const std::string& path, uint64_t max, const std::string& what,
                                    Symlinks symlinks = Symlinks::follow, struct stat* info = nullptr);

// open(2) with O_NOFOLLOW | O_CLOEXEC added: a symbolic link is an error that
// says so. For the files inside a checkpoint directory.
Result<UniqueFd> open_no_symlink(const std::string& path, int flags, const std::string& what, mode_t mode = 0);

}  // namespace vvmm
