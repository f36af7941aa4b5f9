// Loads a Linux boot-protocol kernel (bzImage or ELF vmlinux) and its initrd
// into guest memory and points the boot vCPU at its 64-bit entry.
#pragma once

#include <optional>
#include <string>

#include "vmm/base/result.hpp"
#include "vmm/machine.hpp"

namespace vvmm::vmm {

struct LinuxBootSpec {
    std::string kernel_path;
    std::optional<std::string> initrd_path;
    std::string cmdline;  // complete, as the guest will see it
};

Result<void> load_linux(Machine& machine, const LinuxBootSpec& spec);

// Checks the kernel and initrd files without a VM (that they load and fit
// in mem_size): bad input fails fast, before KVM is touched.
Result<void> check_boot_files(const LinuxBootSpec& spec, uint64_t mem_size);

}  // namespace vvmm::vmm
