#include "vmm/vm_config.hpp"

#include "vmm/base/size_parse.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"

namespace vvmm::vmm {

std::string VmConfig::full_cmdline() const
{
    return cmdline_extra.empty() ? std::string(kDefaultCmdline) : std::string(kDefaultCmdline) + " " + cmdline_extra;
}

Result<void> validate_vm_config(const VmConfig& c)
{
    if (c.kernel.empty()) return Error("--kernel is required");
    if (c.cpus < kMinCpus || c.cpus > kMaxCpus)
        return Error("--cpus " + std::to_string(c.cpus) + " is out of range (1.." + std::to_string(kMaxCpus) + ")");
    if (c.mem_bytes < layout::kMinMemory || c.mem_bytes > layout::kMaxMemory)
        return Error("--mem " + format_size(c.mem_bytes) + " is out of range (" + format_size(layout::kMinMemory) +
                     ".." + format_size(layout::kMaxMemory) + ")");
    if (c.mem_bytes % (2 << 20)) return Error("--mem must be a multiple of 2 MiB");
    if (c.cmdline_extra.find('\0') != std::string::npos) return Error("--cmdline contains a NUL byte");
    return ok();
}

}  // namespace vvmm::vmm
