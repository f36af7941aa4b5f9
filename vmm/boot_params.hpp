// The Linux "zero page" (struct boot_params) a 64-bit kernel reads at entry.
// Pure code: fills a 4 KiB buffer.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/kernel_image.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {

namespace boot_params {
inline constexpr size_t kSize = 4096;
inline constexpr size_t kExtRamdiskImage = 0x0c0;
inline constexpr size_t kExtRamdiskSize = 0x0c4;
inline constexpr size_t kExtCmdLinePtr = 0x0c8;
inline constexpr size_t kE820Entries = 0x1e8;
inline constexpr size_t kSetupHeader = 0x1f1;
inline constexpr size_t kBootFlag = 0x1fe;
inline constexpr size_t kHeader = 0x202;
inline constexpr size_t kVersion = 0x206;
inline constexpr size_t kTypeOfLoader = 0x210;
inline constexpr size_t kLoadflags = 0x211;
inline constexpr size_t kRamdiskImage = 0x218;
inline constexpr size_t kRamdiskSize = 0x21c;
inline constexpr size_t kCmdLinePtr = 0x228;
inline constexpr size_t kKernelAlignment = 0x230;
inline constexpr size_t kCmdlineSize = 0x238;
inline constexpr size_t kE820Table = 0x2d0;
inline constexpr size_t kE820Max = 128;
}  // namespace boot_params

struct BootParamsInput {
    const KernelImage* kernel;
    uint64_t cmdline_addr;
    uint64_t initrd_addr = 0;
    uint64_t initrd_size = 0;
    std::vector<E820Entry> e820;
};

Result<void> build_boot_params(std::span<uint8_t> zero_page, const BootParamsInput& in);

// Where the initrd goes: as high as possible in low RAM, page aligned, above
// the kernel and below its initrd_addr_max.
Result<uint64_t> place_initrd(const KernelImage& kernel, uint64_t initrd_size, uint64_t low_ram_end);

}  // namespace vvmm::vmm
