// The file system a sandboxed VMM can still reach (Linux landlock, 5.13+;
// Debian 12's 6.1 has ABI 2). Landlock restricts the thread that asks and
// the threads it creates later, so vvmm asks from its main thread before it
// starts any other: the rules also cover what set-up still opens (/dev/kvm,
// the kernel, the disks, /proc, OpenSSL's configuration).
//
// Rights handled: those of landlock ABI 1 to 3 (read, write, create and
// remove files and directories, execute, links and renames, truncate), so a
// path not listed cannot be read, written, created or executed at all. Not
// handled: ioctl on device files (ABI 5; KVM lives on ioctls of fds already
// open) and network ports (ABI 4; the peer mesh is guarded by TLS).
#pragma once

#include <string>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

struct FileAccessRules {
    std::vector<std::string> read;         // files or directory trees: read only
    std::vector<std::string> read_write;   // files: read and write (disks, /dev/kvm)
    std::vector<std::string> write;        // files: write only (a console file)
    std::vector<std::string> full;         // directory trees: anything but execute and device nodes (checkpoints)
    std::vector<std::string> socket_dirs;  // directories where a socket file is made and later removed
};

// Applies `rules` to this thread and every thread it creates from now on.
// Paths that do not exist are skipped (e.g. /dev/userfaultfd before 6.1).
// Returns what was applied, e.g. "landlock ABI 2", or why nothing was:
// a kernel without landlock is not an error (the seccomp filter still
// applies), anything else is.
Result<std::string> restrict_file_access(const FileAccessRules& rules);

}  // namespace vvmm::vmm
