// What `vvmm run` was asked to build, validated before anything is created.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

inline constexpr const char* kDefaultCmdline = "console=ttyS0 reboot=k panic=-1 acpi=off";
inline constexpr unsigned kMinCpus = 1;

struct VmConfig {
    std::string kernel;
    std::optional<std::string> initrd;
    std::string cmdline_extra;
    unsigned cpus = 1;
    uint64_t mem_bytes = 512ull << 20;
    std::string console = "stdio";
    bool huge_pages = false;

    std::string full_cmdline() const;
};

// Ranges and shapes only (no file system access).
Result<void> validate_vm_config(const VmConfig& config);

}  // namespace vvmm::vmm
