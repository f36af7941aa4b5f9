#include <doctest/doctest.h>

#include "vmm/base/size_parse.hpp"

using vvmm::parse_size;

TEST_CASE("sizes with and without suffixes")
{
    CHECK(parse_size("65536").value() == 65536);
    CHECK(parse_size("256M").value() == 256ull << 20);
    CHECK(parse_size("2G").value() == 2ull << 30);
    CHECK(parse_size("2g").value() == 2ull << 30);
    CHECK(parse_size("4KiB").value() == 4096);
    CHECK(parse_size("1T").value() == 1ull << 40);
    CHECK(parse_size("512MB").value() == 512ull << 20);
}

TEST_CASE("bad sizes are refused")
{
    CHECK_FALSE(parse_size("").ok());
    CHECK_FALSE(parse_size("M").ok());
    CHECK_FALSE(parse_size("12X").ok());
    CHECK_FALSE(parse_size("-1G").ok());
    CHECK_FALSE(parse_size("1.5G").ok());
    CHECK_FALSE(parse_size("99999999999999999999").ok());
    CHECK_FALSE(parse_size("17179869184G").ok());  // 2^34 GiB overflows 64 bits
    CHECK(parse_size("12X").error().message().find("suffix") != std::string::npos);
}

TEST_CASE("format_size picks the largest exact unit")
{
    CHECK(vvmm::format_size(512ull << 20) == "512 MiB");
    CHECK(vvmm::format_size(3ull << 30) == "3 GiB");
    CHECK(vvmm::format_size(1000) == "1000 B");
}
