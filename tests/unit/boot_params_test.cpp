#include <doctest/doctest.h>

#include <vector>

#include "vmm/base/le.hpp"
#include "vmm/boot_params.hpp"

using namespace vvmm;
using namespace vvmm::vmm;

TEST_CASE("boot_params carries the header, command line, initrd and e820")
{
    KernelImage k{};
    k.kind = KernelImage::Kind::bzimage;
    k.setup_header.assign(0x26c - 0x1f1, 0);
    k.setup_header[0] = 4;                       // setup_sects
    store_le<uint32_t>(&k.setup_header[0x202 - 0x1f1], 0x53726448);
    std::vector<uint8_t> zp(4096, 0xcc);
    BootParamsInput in{&k, 0x20000, 0x1f000000, 0x123456, e820_map(512 * layout::kMiB)};
    REQUIRE(build_boot_params(zp, in).ok());
    CHECK(zp[0x1f1] == 4);
    CHECK(le32(zp, 0x202) == 0x53726448);
    CHECK(zp[0x210] == 0xff);
    CHECK((zp[0x211] & 1) == 1);
    CHECK(le32(zp, 0x228) == 0x20000);
    CHECK(le32(zp, 0x218) == 0x1f000000);
    CHECK(le32(zp, 0x21c) == 0x123456);
    CHECK(zp[0x1e8] == in.e820.size());
    CHECK(le64(zp, 0x2d0) == 0);
    CHECK(le64(zp, 0x2d0 + 8) == layout::kEbdaStart);
    CHECK(le32(zp, 0x2d0 + 16) == 1);
    CHECK(zp[0x100] == 0);  // everything else zeroed
}

TEST_CASE("an ELF kernel gets a synthesized header")
{
    KernelImage k{};
    k.kind = KernelImage::Kind::elf;
    std::vector<uint8_t> zp(4096);
    BootParamsInput in{&k, 0x20000, 0, 0, e820_map(256 * layout::kMiB)};
    REQUIRE(build_boot_params(zp, in).ok());
    CHECK(le16(zp, 0x1fe) == 0xAA55);
    CHECK(le32(zp, 0x202) == 0x53726448);
    CHECK(le16(zp, 0x206) >= 0x020c);
    CHECK(le32(zp, 0x218) == 0);
}

TEST_CASE("initrd goes high in low RAM, page aligned, above the kernel")
{
    KernelImage k{};
    k.load_end = 0x2000000;
    k.initrd_addr_max = 0x7fffffff;
    auto a = place_initrd(k, 10'000'000, 512 * layout::kMiB);
    REQUIRE(a.ok());
    CHECK(a.value() % 4096 == 0);
    CHECK(a.value() + 10'000'000 <= 512 * layout::kMiB);
    CHECK(a.value() >= k.load_end);
    CHECK_FALSE(place_initrd(k, 600 * layout::kMiB, 512 * layout::kMiB).ok());
    k.initrd_addr_max = 0x3000000 - 1;  // must end below 48 MiB
    auto b = place_initrd(k, 0x800000, 512 * layout::kMiB);
    REQUIRE(b.ok());
    CHECK(b.value() + 0x800000 <= 0x3000000);
}
