#include <doctest/doctest.h>

#include "devices/i8042.hpp"

using vvmm::dev::I8042;

namespace {
struct Kbc {
    int resets = 0;
    I8042 dev{[this] { ++resets; }};
    uint8_t in(uint64_t off)
    {
        uint8_t b = 0;
        dev.read(off, {&b, 1});
        return b;
    }
    void out(uint64_t off, uint8_t v) { dev.write(off, {&v, 1}); }
};
}  // namespace

TEST_CASE("0xFE resets the machine")
{
    Kbc k;
    k.out(4, 0xFE);
    CHECK(k.resets == 1);
}

TEST_CASE("writing the output port with bit 0 clear resets")
{
    Kbc k;
    k.out(4, 0xD1);
    k.out(0, 0xDF);
    CHECK(k.resets == 0);
    k.out(4, 0xD1);
    k.out(0, 0xDE);
    CHECK(k.resets == 1);
}

TEST_CASE("self test and command byte round trip")
{
    Kbc k;
    CHECK((k.in(4) & 1) == 0);
    k.out(4, 0xAA);
    CHECK((k.in(4) & 1) == 1);
    CHECK(k.in(0) == 0x55);
    k.out(4, 0x60);
    k.out(0, 0x47);
    k.out(4, 0x20);
    CHECK(k.in(0) == 0x47);
    CHECK(k.resets == 0);
}
