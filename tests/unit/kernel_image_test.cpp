#include <doctest/doctest.h>
#include <elf.h>

#include <cstring>
#include <vector>

#include "vmm/base/le.hpp"
#include "vmm/kernel_image.hpp"
#include "vmm/memory_layout.hpp"

using namespace vvmm;
using namespace vvmm::vmm;

namespace {

std::vector<uint8_t> make_bzimage(uint16_t version = 0x020f, uint8_t setup_sects = 4, size_t pm_size = 8192)
{
    std::vector<uint8_t> f((setup_sects + 1) * 512 + pm_size, 0);
    f[0x1f1] = setup_sects;
    store_le<uint16_t>(&f[0x1fe], 0xAA55);
    f[0x200] = 0xEB;
    f[0x201] = 0x6a;  // header runs to 0x26c
    store_le<uint32_t>(&f[0x202], 0x53726448);
    store_le<uint16_t>(&f[0x206], version);
    f[0x211] = 0x01;
    store_le<uint32_t>(&f[0x214], 0x100000);
    store_le<uint32_t>(&f[0x22c], 0x7fffffff);
    store_le<uint16_t>(&f[0x236], 0x1);
    store_le<uint32_t>(&f[0x238], 2048);
    store_le<uint32_t>(&f[0x260], 0x10000);
    return f;
}

std::vector<uint8_t> make_elf(uint64_t paddr = 0x1000000, uint64_t entry = 0x1000000)
{
    std::vector<uint8_t> f(0x2000, 0);
    Elf64_Ehdr eh{};
    std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    eh.e_type = ET_EXEC;
    eh.e_machine = EM_X86_64;
    eh.e_entry = entry;
    eh.e_phoff = sizeof eh;
    eh.e_phentsize = sizeof(Elf64_Phdr);
    eh.e_phnum = 1;
    std::memcpy(f.data(), &eh, sizeof eh);
    Elf64_Phdr ph{};
    ph.p_type = PT_LOAD;
    ph.p_offset = 0x1000;
    ph.p_paddr = paddr;
    ph.p_filesz = 0x1000;
    ph.p_memsz = 0x3000;
    std::memcpy(f.data() + sizeof eh, &ph, sizeof ph);
    return f;
}

constexpr uint64_t kLowEnd = 512 * layout::kMiB;

}  // namespace

TEST_CASE("a bzImage is loaded at 1 MiB with its 64-bit entry at +0x200")
{
    auto f = make_bzimage();
    auto k = parse_kernel_image(f, kLowEnd);
    REQUIRE(k.ok());
    CHECK(k->kind == KernelImage::Kind::bzimage);
    REQUIRE(k->segments.size() == 1);
    CHECK(k->segments[0].file_offset == 5 * 512);
    CHECK(k->segments[0].guest_phys == 0x100000);
    CHECK(k->entry == 0x100200);
    CHECK(k->load_end == 0x100000 + 0x10000);  // init_size is larger than the payload
    CHECK(k->setup_header.size() == 0x26c - 0x1f1);
    CHECK(k->cmdline_size == 2048);
}

TEST_CASE("a relocatable bzImage goes to its preferred address")
{
    auto f = make_bzimage();
    f[0x234] = 1;
    store_le<uint32_t>(&f[0x230], 0x200000);
    store_le<uint64_t>(&f[0x258], 0x1000000);
    auto k = parse_kernel_image(f, kLowEnd);
    REQUIRE(k.ok());
    CHECK(k->segments[0].guest_phys == 0x1000000);
    CHECK(k->entry == 0x1000200);
}

TEST_CASE("bzImage errors")
{
    SUBCASE("old protocol") {
        auto f = make_bzimage(0x0206);
        auto k = parse_kernel_image(f, kLowEnd);
        REQUIRE_FALSE(k.ok());
        CHECK(k.error().message().find("2.6 is too old") != std::string::npos);
    }
    SUBCASE("no 64-bit entry") {
        auto f = make_bzimage();
        f[0x236] = 0;
        CHECK(parse_kernel_image(f, kLowEnd).error().message().find("64-bit") != std::string::npos);
    }
    SUBCASE("truncated") {
        auto f = make_bzimage(0x020f, 30, 0);
        f.resize(0x300);
        CHECK_FALSE(parse_kernel_image(f, kLowEnd).ok());
    }
    SUBCASE("does not fit") {
        auto f = make_bzimage();
        store_le<uint32_t>(&f[0x260], 0x7fffffff);
        CHECK(parse_kernel_image(f, kLowEnd).error().message().find("--mem") != std::string::npos);
    }
    SUBCASE("garbage") {
        std::vector<uint8_t> f(4096, 0x90);
        CHECK(parse_kernel_image(f, kLowEnd).error().message() == "not a bzImage or ELF kernel");
    }
}

TEST_CASE("an ELF vmlinux loads its PT_LOAD segments at their physical addresses")
{
    auto f = make_elf();
    auto k = parse_kernel_image(f, kLowEnd);
    REQUIRE(k.ok());
    CHECK(k->kind == KernelImage::Kind::elf);
    REQUIRE(k->segments.size() == 1);
    CHECK(k->segments[0].guest_phys == 0x1000000);
    CHECK(k->segments[0].mem_size == 0x3000);
    CHECK(k->entry == 0x1000000);
    CHECK(k->load_end == 0x1003000);
}

TEST_CASE("ELF errors")
{
    SUBCASE("entry outside segments") { CHECK_FALSE(parse_kernel_image(make_elf(0x1000000, 0x5000000), kLowEnd).ok()); }
    SUBCASE("segment below 1 MiB") { CHECK_FALSE(parse_kernel_image(make_elf(0x1000, 0x1000), kLowEnd).ok()); }
    SUBCASE("segment beyond RAM") { CHECK_FALSE(parse_kernel_image(make_elf(kLowEnd - 0x1000, kLowEnd - 0x1000), kLowEnd).ok()); }
    SUBCASE("segment outside file") {
        auto f = make_elf();
        f.resize(0x1800);
        CHECK(parse_kernel_image(f, kLowEnd).error().message().find("outside the file") != std::string::npos);
    }
    SUBCASE("32-bit") {
        auto f = make_elf();
        f[EI_CLASS] = ELFCLASS32;
        CHECK_FALSE(parse_kernel_image(f, kLowEnd).ok());
    }
}
