#include <doctest/doctest.h>

#include "devices/disk_image.hpp"
#include "devices/virtio/virtio_blk.hpp"
#include "vmm/base/le.hpp"

using namespace vvmm;
using namespace vvmm::dev;

TEST_CASE("--disk option")
{
    auto d = parse_disk_spec("path=a.img,readonly=on,id=disk-7");
    REQUIRE(d.ok());
    CHECK(d->path == "a.img");
    CHECK(d->readonly);
    CHECK(d->id == "disk-7");
    CHECK_FALSE(parse_disk_spec("path=a.img").value().readonly);
    CHECK_FALSE(parse_disk_spec("readonly=on").ok());
    CHECK_FALSE(parse_disk_spec("path=a,readonly=maybe").ok());
    CHECK_FALSE(parse_disk_spec("path=a,cache=none").ok());
    CHECK_FALSE(parse_disk_spec("a.img").ok());
    CHECK_FALSE(parse_disk_spec("path=a,id=123456789012345678901").ok());
}

TEST_CASE("a missing disk image is a clear error")
{
    auto d = DiskImage::open({"/nonexistent/disk.img", false, ""});
    REQUIRE_FALSE(d.ok());
    CHECK(d.error().message().find("cannot open disk image '/nonexistent/disk.img'") != std::string::npos);
}

TEST_CASE("block request parsing")
{
    auto mem = vmm::GuestMemory::create(1 << 20).value();
    auto put_header = [&](uint64_t gpa, uint32_t type, uint64_t sector) {
        auto s = mem.span(gpa, 16).value();
        store_le<uint32_t>(s.data(), type);
        store_le<uint64_t>(s.data() + 8, sector);
    };
    put_header(0x1000, blk::kTypeIn, 42);
    DescriptorChain read_chain{0, {{0x1000, 16, false}, {0x2000, 4096, true}, {0x3000, 1, true}}, 16, 4097};
    auto r = parse_block_request(mem, read_chain);
    REQUIRE(r.ok());
    CHECK(r->type == blk::kTypeIn);
    CHECK(r->sector == 42);
    CHECK(r->data_len == 4096);

    // Header and data in one descriptor (any layout is allowed).
    put_header(0x4000, blk::kTypeOut, 7);
    DescriptorChain write_chain{0, {{0x4000, 16 + 1024, false}, {0x3000, 1, true}}, 16 + 1024, 1};
    r = parse_block_request(mem, write_chain);
    REQUIRE(r.ok());
    CHECK(r->type == blk::kTypeOut);
    CHECK(r->data_len == 1024);

    DescriptorChain short_chain{0, {{0x1000, 8, false}, {0x3000, 1, true}}, 8, 1};
    CHECK_FALSE(parse_block_request(mem, short_chain).ok());
    DescriptorChain no_status{0, {{0x1000, 16, false}}, 16, 0};
    CHECK_FALSE(parse_block_request(mem, no_status).ok());
}
