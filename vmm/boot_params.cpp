#include "vmm/boot_params.hpp"

#include <algorithm>
#include <cstring>

#include "vmm/base/le.hpp"
#include "vmm/base/size_parse.hpp"

namespace vvmm::vmm {

Result<void> build_boot_params(std::span<uint8_t> zp, const BootParamsInput& in)
{
    namespace bp = boot_params;
    if (zp.size() != bp::kSize) return Error("boot_params buffer must be 4 KiB");
    std::fill(zp.begin(), zp.end(), uint8_t{0});
    const KernelImage& k = *in.kernel;
    if (k.kind == KernelImage::Kind::bzimage) {
        std::memcpy(zp.data() + bp::kSetupHeader, k.setup_header.data(), k.setup_header.size());
    } else {
        // An ELF vmlinux has no setup header: provide the fields a kernel reads.
        store_le<uint16_t>(zp.data() + bp::kBootFlag, 0xAA55);
        store_le<uint32_t>(zp.data() + bp::kHeader, 0x53726448);  // "HdrS"
        store_le<uint16_t>(zp.data() + bp::kVersion, 0x020c);
        store_le<uint32_t>(zp.data() + bp::kKernelAlignment, 0x1000000);
    }
    zp[bp::kTypeOfLoader] = 0xff;      // "undefined" loader
    zp[bp::kLoadflags] |= 0x01;        // LOADED_HIGH
    store_le<uint32_t>(zp.data() + bp::kCmdLinePtr, static_cast<uint32_t>(in.cmdline_addr));
    store_le<uint32_t>(zp.data() + bp::kExtCmdLinePtr, static_cast<uint32_t>(in.cmdline_addr >> 32));
    if (in.initrd_size) {
        store_le<uint32_t>(zp.data() + bp::kRamdiskImage, static_cast<uint32_t>(in.initrd_addr));
        store_le<uint32_t>(zp.data() + bp::kRamdiskSize, static_cast<uint32_t>(in.initrd_size));
        store_le<uint32_t>(zp.data() + bp::kExtRamdiskImage, static_cast<uint32_t>(in.initrd_addr >> 32));
        store_le<uint32_t>(zp.data() + bp::kExtRamdiskSize, static_cast<uint32_t>(in.initrd_size >> 32));
    }
    if (in.e820.size() > bp::kE820Max) return Error("too many e820 entries");
    zp[bp::kE820Entries] = static_cast<uint8_t>(in.e820.size());
    for (size_t i = 0; i < in.e820.size(); ++i) {
        uint8_t* e = zp.data() + bp::kE820Table + i * 20;
        store_le<uint64_t>(e, in.e820[i].addr);
        store_le<uint64_t>(e + 8, in.e820[i].size);
        store_le<uint32_t>(e + 16, static_cast<uint32_t>(in.e820[i].type));
    }
    return ok();
}

Result<uint64_t> place_initrd(const KernelImage& kernel, uint64_t initrd_size, uint64_t low_ram_end)
{
    constexpr uint64_t page = 4096;
    uint64_t top = low_ram_end;
    if (kernel.initrd_addr_max) top = std::min(top, uint64_t(kernel.initrd_addr_max) + 1);
    const uint64_t bottom = (kernel.load_end + page - 1) & ~(page - 1);
    if (initrd_size > top || ((top - initrd_size) & ~(page - 1)) < bottom)
        return Error("initrd of " + format_size(initrd_size) + " does not fit in low RAM above the kernel (use more --mem)");
    return (top - initrd_size) & ~(page - 1);
}

}  // namespace vvmm::vmm
