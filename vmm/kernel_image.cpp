#include "vmm/kernel_image.hpp"

#include <elf.h>

#include <sstream>

#include "vmm/base/le.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {
namespace {

// Offsets in the real-mode kernel header (Documentation/arch/x86/boot.rst).
constexpr size_t kSetupSects = 0x1f1;
constexpr size_t kBootFlag = 0x1fe;
constexpr size_t kJump = 0x200;
constexpr size_t kHeaderMagic = 0x202;
constexpr size_t kVersion = 0x206;
constexpr size_t kLoadflags = 0x211;
constexpr size_t kCode32Start = 0x214;
constexpr size_t kInitrdAddrMax = 0x22c;
constexpr size_t kKernelAlignment = 0x230;
constexpr size_t kRelocatable = 0x234;
constexpr size_t kCmdlineSize = 0x238;
constexpr size_t kXloadflags = 0x236;
constexpr size_t kPrefAddress = 0x258;
constexpr size_t kInitSize = 0x260;
constexpr size_t kMinHeaderFile = 0x268;
constexpr uint16_t kMinProtocol = 0x020c;  // 2.12: xloadflags and the 64-bit entry
constexpr uint8_t kLoadedHigh = 0x01;
constexpr uint16_t kXlfKernel64 = 0x01;

std::string hex(uint64_t v)
{
    std::ostringstream s;
    s << "0x" << std::hex << v;
    return s.str();
}

std::string version_string(uint16_t v)
{
    return std::to_string(v >> 8) + "." + std::to_string(v & 0xff);
}

bool is_bzimage(std::span<const uint8_t> f)
{
    return f.size() >= kMinHeaderFile && le16(f, kBootFlag) == 0xAA55 && le32(f, kHeaderMagic) == 0x53726448;
}

bool is_elf(std::span<const uint8_t> f)
{
    return f.size() >= 4 && f[0] == ELFMAG0 && f[1] == ELFMAG1 && f[2] == ELFMAG2 && f[3] == ELFMAG3;
}

Result<KernelImage> parse_bzimage(std::span<const uint8_t> f, uint64_t low_ram_end)
{
    KernelImage k{};
    k.kind = KernelImage::Kind::bzimage;
    k.protocol_version = le16(f, kVersion);
    if (k.protocol_version < kMinProtocol)
        return Error("boot protocol " + version_string(k.protocol_version) + " is too old (need 2.12 or later)");
    if (!(f[kLoadflags] & kLoadedHigh)) return Error("zImage (loaded low) kernels are not supported");
    if (!(le16(f, kXloadflags) & kXlfKernel64)) return Error("kernel has no 64-bit entry point (XLF_KERNEL_64 not set)");

    const uint64_t setup_sects = f[kSetupSects] ? f[kSetupSects] : 4;
    const uint64_t pm_offset = (setup_sects + 1) * 512;
    if (pm_offset >= f.size()) return Error("truncated: setup claims " + std::to_string(setup_sects) + " sectors");
    const uint64_t pm_size = f.size() - pm_offset;

    uint64_t load = le32(f, kCode32Start);
    if (f[kRelocatable]) {
        const uint64_t align = le32(f, kKernelAlignment);
        const uint64_t pref = le64(f, kPrefAddress);
        load = pref >= layout::kHighMemStart ? pref : layout::kHighMemStart;
        if (align && (align & (align - 1)) == 0) load = (load + align - 1) & ~(align - 1);
    }
    if (load < layout::kHighMemStart) return Error("kernel wants to load at " + hex(load) + ", below 1 MiB");
    const uint64_t init_size = le32(f, kInitSize);
    const uint64_t need = init_size > pm_size ? init_size : pm_size;
    k.load_end = load + need;
    if (k.load_end > low_ram_end)
        return Error("kernel needs memory up to " + hex(k.load_end) + " but low RAM ends at " + hex(low_ram_end) +
                     " (use more --mem)");
    k.segments.push_back({pm_offset, pm_size, load, pm_size});
    k.entry = load + 0x200;  // startup_64
    const size_t header_end = kJump + 2 + f[kJump + 1];  // the jump's offset byte says how long the header is
    if (header_end > f.size() || header_end > 0x290) return Error("setup header is malformed");
    k.setup_header.assign(f.begin() + kSetupSects, f.begin() + static_cast<long>(header_end));
    k.cmdline_size = le32(f, kCmdlineSize);
    k.initrd_addr_max = le32(f, kInitrdAddrMax);
    return k;
}

Result<KernelImage> parse_elf(std::span<const uint8_t> f, uint64_t low_ram_end)
{
    if (f.size() < sizeof(Elf64_Ehdr)) return Error("truncated ELF header");
    Elf64_Ehdr eh;
    std::memcpy(&eh, f.data(), sizeof eh);
    if (eh.e_ident[EI_CLASS] != ELFCLASS64) return Error("ELF kernel is not 64-bit");
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB) return Error("ELF kernel is not little-endian");
    if (eh.e_machine != EM_X86_64) return Error("ELF kernel is not for x86-64");
    if (eh.e_type != ET_EXEC) return Error("ELF kernel is not an executable");
    if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0) return Error("ELF kernel has no program headers");
    if (eh.e_phoff > f.size() || uint64_t(eh.e_phnum) * sizeof(Elf64_Phdr) > f.size() - eh.e_phoff)
        return Error("ELF program headers are outside the file");

    KernelImage k{};
    k.kind = KernelImage::Kind::elf;
    k.entry = eh.e_entry;
    k.load_end = 0;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        Elf64_Phdr ph;
        std::memcpy(&ph, f.data() + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_LOAD) continue;
        if (ph.p_offset > f.size() || ph.p_filesz > f.size() - ph.p_offset)
            return Error("ELF segment " + std::to_string(i) + " lies outside the file");
        if (ph.p_filesz > ph.p_memsz) return Error("ELF segment " + std::to_string(i) + " has filesz > memsz");
        if (ph.p_paddr < layout::kHighMemStart || ph.p_paddr > low_ram_end || ph.p_memsz > low_ram_end - ph.p_paddr)
            return Error("ELF segment " + std::to_string(i) + " at " + hex(ph.p_paddr) + "+" + hex(ph.p_memsz) +
                         " does not fit in low RAM (1 MiB.." + hex(low_ram_end) + "; use more --mem)");
        k.segments.push_back({ph.p_offset, ph.p_filesz, ph.p_paddr, ph.p_memsz});
        if (ph.p_paddr + ph.p_memsz > k.load_end) k.load_end = ph.p_paddr + ph.p_memsz;
    }
    if (k.segments.empty()) return Error("ELF kernel has no loadable segments");
    bool entry_inside = false;
    for (const auto& s : k.segments)
        entry_inside |= k.entry >= s.guest_phys && k.entry < s.guest_phys + s.mem_size;
    if (!entry_inside) return Error("ELF entry point " + hex(k.entry) + " is not inside a loaded segment");
    k.initrd_addr_max = 0x7fffffff;
    return k;
}

}  // namespace

Result<KernelImage> parse_kernel_image(std::span<const uint8_t> file, uint64_t low_ram_end)
{
    if (is_bzimage(file)) return parse_bzimage(file, low_ram_end);
    if (is_elf(file)) return parse_elf(file, low_ram_end);
    return Error("not a bzImage or ELF kernel");
}

}  // namespace vvmm::vmm
