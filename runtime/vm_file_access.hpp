// What a VMM may reach in the file system once it is sandboxed: its kernel,
// disks, console, checkpoint directory and control socket (the key file is
// read before), plus
// what set-up and the libraries it uses read (vmm/landlock.hpp). Applied
// from the main thread before the session starts any thread.
#pragma once

#include <string>
#include <vector>

#include "devices/disk_image.hpp"
#include "devices/host_console.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::runtime {

struct VmFiles {
    std::vector<std::string> boot_files;          // kernel, initrd: read
    std::vector<dev::DiskSpec> disks;             // read, or read and write
    std::vector<std::string> checkpoint_reads;    // a restored checkpoint's directory
    dev::ConsoleSpec console;
    std::string checkpoint_dir;                   // empty: this VM cannot checkpoint
    std::string api_socket;
    std::string persist_dir;                      // a diskless cluster's persisted epochs (persist_every)
};

// Creates what must exist before it can be allowed (the checkpoint
// directory, a console file), then restricts this thread and its future
// threads to `files` where the kernel has landlock. Does nothing with the
// sandbox off (vvmm --no-sandbox).
Result<void> confine_file_access(const VmFiles& files);

}  // namespace vvmm::runtime
