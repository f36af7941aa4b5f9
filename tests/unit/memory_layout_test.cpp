#include <doctest/doctest.h>

#include <cstddef>

#include "vmm/memory_layout.hpp"

using namespace vvmm::vmm;

TEST_CASE("small memory is all low RAM")
{
    auto r = ram_regions(512 * layout::kMiB);
    REQUIRE(r.size() == 1);
    CHECK(r[0].guest_phys == 0);
    CHECK(r[0].size == 512 * layout::kMiB);
}

TEST_CASE("memory above the PCI hole moves above 4 GiB")
{
    auto r = ram_regions(4 * layout::kGiB);
    REQUIRE(r.size() == 2);
    CHECK(r[0].size == layout::kPciHoleStart);
    CHECK(r[1].guest_phys == layout::kFourGiB);
    CHECK(r[1].size == 4 * layout::kGiB - layout::kPciHoleStart);
    CHECK(r[1].file_offset == layout::kPciHoleStart);
}

TEST_CASE("e820 covers exactly the RAM minus the legacy hole")
{
    for (uint64_t mem : {64 * layout::kMiB, 3 * layout::kGiB, 6 * layout::kGiB}) {
        CAPTURE(mem);
        auto map = e820_map(mem);
        uint64_t ram = 0;
        for (std::size_t i = 0; i < map.size(); ++i) {
            if (map[i].type == E820Type::ram) ram += map[i].size;
            if (i) CHECK(map[i].addr >= map[i - 1].addr + map[i - 1].size);  // sorted, no overlap
            CHECK((map[i].addr + map[i].size <= layout::kPciHoleStart || map[i].addr >= layout::kFourGiB));
        }
        // Only the EBDA..1 MiB window is withheld.
        CHECK(ram == mem - (0x100000 - layout::kEbdaStart));
    }
}
