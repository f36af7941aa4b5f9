#include "vmm/memory_layout.hpp"

#include <algorithm>

namespace vvmm::vmm {

std::vector<RamRegion> ram_regions(uint64_t mem_size)
{
    std::vector<RamRegion> regions;
    const uint64_t low = std::min(mem_size, layout::kPciHoleStart);
    regions.push_back({0, low, 0});
    if (mem_size > low) regions.push_back({layout::kFourGiB, mem_size - low, low});
    return regions;
}

std::vector<E820Entry> e820_map(uint64_t mem_size)
{
    std::vector<E820Entry> map;
    map.push_back({0, layout::kEbdaStart, E820Type::ram});
    map.push_back({layout::kEbdaStart, 0x100000 - layout::kEbdaStart, E820Type::reserved});
    for (const auto& r : ram_regions(mem_size)) {
        if (r.guest_phys == 0) {
            if (r.size > layout::kHighMemStart)
                map.push_back({layout::kHighMemStart, r.size - layout::kHighMemStart, E820Type::ram});
        } else {
            map.push_back({r.guest_phys, r.size, E820Type::ram});
        }
    }
    return map;
}

}  // namespace vvmm::vmm
