// Where things live in guest-physical memory, and the e820 map derived from
// the RAM size. Pure code: no KVM, unit-tested.
#pragma once

#include <cstdint>
#include <vector>

namespace vvmm::vmm {

namespace layout {
inline constexpr uint64_t kMiB = 1ull << 20;
inline constexpr uint64_t kGiB = 1ull << 30;

// Boot-time structures in low memory (the same places other small VMMs use,
// away from the real-mode IVT/BDA and below the kernel at 1 MiB).
inline constexpr uint64_t kBootGdt = 0x500;
inline constexpr uint64_t kBootIdt = 0x520;
inline constexpr uint64_t kZeroPage = 0x7000;       // struct boot_params
inline constexpr uint64_t kPml4 = 0x9000;
inline constexpr uint64_t kPdpt = 0xA000;
inline constexpr uint64_t kPd = 0xB000;             // 4 pages: identity map of 0..4 GiB
inline constexpr uint64_t kBootStack = 0x8ff0;      // grows down; only used before the kernel sets its own
inline constexpr uint64_t kCmdline = 0x20000;
inline constexpr uint64_t kCmdlineMax = 0x10000;    // bytes, including the NUL
inline constexpr uint64_t kEbdaStart = 0x9FC00;     // MP table lives here (Linux scans it)
inline constexpr uint64_t kBiosStart = 0xA0000;
inline constexpr uint64_t kHighMemStart = 0x100000; // 1 MiB: kernel load address
// The 32-bit hole for PCI BARs, LAPIC, IOAPIC and firmware; RAM that would
// fall into it moves above 4 GiB.
inline constexpr uint64_t kPciHoleStart = 0xC0000000;
inline constexpr uint64_t kFourGiB = 4 * kGiB;
inline constexpr uint64_t kIoApicBase = 0xFEC00000;
inline constexpr uint64_t kLapicBase = 0xFEE00000;
// VT-x needs these pages for real-mode emulation; inside the hole, never RAM.
inline constexpr uint64_t kIdentityMapAddr = 0xFFFBC000;
inline constexpr uint64_t kTssAddr = 0xFFFBD000;

inline constexpr uint64_t kMinMemory = 32 * kMiB;
inline constexpr uint64_t kMaxMemory = 1024 * kGiB;
}  // namespace layout

enum class E820Type : uint32_t { ram = 1, reserved = 2 };

struct E820Entry {
    uint64_t addr;
    uint64_t size;
    E820Type type;
    bool operator==(const E820Entry&) const = default;
};

// A contiguous range of guest RAM backed by one slice of the memory file.
struct RamRegion {
    uint64_t guest_phys;
    uint64_t size;
    uint64_t file_offset;
};

// RAM split around the 32-bit PCI hole: low RAM from 0, the rest from 4 GiB.
std::vector<RamRegion> ram_regions(uint64_t mem_size);

// The map the guest sees: low RAM minus the EBDA/BIOS area, the kernel's
// RAM from 1 MiB, and RAM above 4 GiB.
std::vector<E820Entry> e820_map(uint64_t mem_size);

}  // namespace vvmm::vmm
