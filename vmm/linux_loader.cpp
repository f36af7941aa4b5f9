#include "vmm/linux_loader.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>

#include "vmm/base/le.hpp"
#include "vmm/base/memory_mapping.hpp"
#include "vmm/boot_params.hpp"
#include "vmm/kernel_image.hpp"
#include "vmm/long_mode_setup.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"

namespace vvmm::vmm {
namespace {

// A whole file mapped read-only.
struct MappedFile {
    MemoryMapping mapping;
    std::span<const uint8_t> bytes() const { return {mapping.data(), mapping.size()}; }
};

Result<MappedFile> map_file(const std::string& path, const char* what)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error(std::string("cannot open ") + what + " '" + path + "'");
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error(std::string("cannot stat ") + what + " '" + path + "'");
    if (!S_ISREG(st.st_mode)) return Error(std::string(what) + " '" + path + "' is not a regular file");
    if (st.st_size == 0) return Error(std::string(what) + " '" + path + "' is empty");
    TRY_ASSIGN(auto m, MemoryMapping::map(static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd.get(), 0));
    return MappedFile{std::move(m)};
}

uint64_t low_ram_end(uint64_t mem_size) { return std::min(mem_size, layout::kPciHoleStart); }

Result<void> copy_to_guest(const GuestMemory& mem, uint64_t gpa, std::span<const uint8_t> src, uint64_t zero_tail = 0)
{
    TRY_ASSIGN(auto dst, mem.span(gpa, src.size() + zero_tail));
    std::memcpy(dst.data(), src.data(), src.size());
    std::memset(dst.data() + src.size(), 0, zero_tail);
    return ok();
}

Result<void> write_cmdline(const GuestMemory& mem, const KernelImage& k, const std::string& cmdline)
{
    const uint64_t limit = k.cmdline_size ? std::min<uint64_t>(k.cmdline_size, layout::kCmdlineMax - 1)
                                          : layout::kCmdlineMax - 1;
    if (cmdline.size() > limit)
        return Error("kernel command line is " + std::to_string(cmdline.size()) + " bytes; this kernel accepts " +
                     std::to_string(limit));
    const auto* p = reinterpret_cast<const uint8_t*>(cmdline.c_str());
    return copy_to_guest(mem, layout::kCmdline, {p, cmdline.size() + 1});
}

// The BIOS data area fields a kernel consults to find the EBDA (and the MP
// table in it) and the size of base memory.
Result<void> write_bios_data_area(const GuestMemory& mem)
{
    TRY_ASSIGN(auto bda, mem.span(0x400, 0x100));
    store_le<uint16_t>(bda.data() + 0x0E, static_cast<uint16_t>(layout::kEbdaStart >> 4));
    store_le<uint16_t>(bda.data() + 0x13, static_cast<uint16_t>(layout::kEbdaStart >> 10));
    return ok();
}

Result<void> set_boot_cpu(KvmVcpu& bsp, uint64_t entry)
{
    TRY_ASSIGN(auto sregs, bsp.sregs());
    set_long_mode_sregs(sregs);
    TRY(bsp.set_sregs(sregs));
    return bsp.set_regs(boot_regs(entry, layout::kZeroPage));
}

}  // namespace

Result<void> check_boot_files(const LinuxBootSpec& spec, uint64_t mem_size)
{
    const uint64_t low_end = low_ram_end(mem_size);
    TRY_ASSIGN(auto file, map_file(spec.kernel_path, "kernel"));
    auto k = parse_kernel_image(file.bytes(), low_end);
    if (!k) return k.error().context("kernel '" + spec.kernel_path + "'");
    if (spec.initrd_path) {
        TRY_ASSIGN(auto initrd, map_file(*spec.initrd_path, "initrd"));
        TRY(place_initrd(k.value(), initrd.mapping.size(), low_end));
    }
    return ok();
}

Result<void> load_linux(Machine& machine, const LinuxBootSpec& spec)
{
    const GuestMemory& mem = machine.memory();
    const uint64_t low_end = low_ram_end(mem.size());
    TRY_ASSIGN(auto kernel_file, map_file(spec.kernel_path, "kernel"));
    auto parsed = parse_kernel_image(kernel_file.bytes(), low_end);
    if (!parsed) return parsed.error().context("kernel '" + spec.kernel_path + "'");
    const KernelImage& k = parsed.value();
    for (const auto& seg : k.segments)
        TRY(copy_to_guest(mem, seg.guest_phys, kernel_file.bytes().subspan(seg.file_offset, seg.file_size),
                          seg.mem_size - seg.file_size));

    BootParamsInput in{&k, layout::kCmdline, 0, 0, e820_map(mem.size())};
    if (spec.initrd_path) {
        TRY_ASSIGN(auto initrd, map_file(*spec.initrd_path, "initrd"));
        TRY_ASSIGN(in.initrd_addr, place_initrd(k, initrd.mapping.size(), low_end));
        in.initrd_size = initrd.mapping.size();
        TRY(copy_to_guest(mem, in.initrd_addr, initrd.bytes()));
    }
    TRY(write_cmdline(mem, k, spec.cmdline));
    TRY_ASSIGN(auto zero_page, mem.span(layout::kZeroPage, boot_params::kSize));
    TRY(build_boot_params(zero_page, in));
    TRY_ASSIGN(auto mp, build_mp_table(machine.cpu_count(), static_cast<uint32_t>(layout::kEbdaStart)));
    TRY(copy_to_guest(mem, layout::kEbdaStart, mp));
    TRY(write_bios_data_area(mem));
    TRY(write_boot_tables(mem));
    return set_boot_cpu(machine.vcpu(0), k.entry);
}

}  // namespace vvmm::vmm
