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

// Checks a kernel file without a VM: used to fail fast on bad input.
Result<void> check_kernel_file(const std::string& path, uint64_t mem_size);

}  // namespace vvmm::vmm
