// Parsing of a kernel file into a load plan: a bzImage (Linux boot protocol
// >= 2.12 with a 64-bit entry) or an uncompressed ELF vmlinux. Pure code.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

// One piece of the file to copy into guest memory; bytes past file_size up
// to mem_size are zeroed (ELF .bss).
struct LoadSegment {
    uint64_t file_offset;
    uint64_t file_size;
    uint64_t guest_phys;
    uint64_t mem_size;
};

struct KernelImage {
    enum class Kind { bzimage, elf } kind;
    std::vector<LoadSegment> segments;
    uint64_t entry;             // guest-physical 64-bit entry point
    uint64_t load_end;          // first byte past what the kernel needs (incl. init_size)
    // bzImage only: the setup header bytes [0x1f1, end of header) to copy
    // into boot_params, as the boot protocol asks.
    std::vector<uint8_t> setup_header;
    uint16_t protocol_version = 0;
    uint32_t cmdline_size = 0;      // max command line length, excl. NUL (0 = no limit known)
    uint32_t initrd_addr_max = 0;   // highest address the initrd may end at
};

// `low_ram_end` is where low RAM ends; the kernel must fit below it.
Result<KernelImage> parse_kernel_image(std::span<const uint8_t> file, uint64_t low_ram_end);

}  // namespace vvmm::vmm
