#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "devices/serial_16550.hpp"

using vvmm::dev::Serial16550;

namespace {
struct Uart {
    std::string out;
    std::vector<bool> irq;
    Serial16550 dev{[this](uint8_t b) { out.push_back(static_cast<char>(b)); }, [this](bool l) { irq.push_back(l); }};
    uint8_t in(uint64_t off)
    {
        uint8_t b = 0;
        dev.read(off, {&b, 1});
        return b;
    }
    void out_(uint64_t off, uint8_t v) { dev.write(off, {&v, 1}); }
    bool line() const { return !irq.empty() && irq.back(); }
};
}  // namespace

TEST_CASE("transmit goes to the host and THR is always empty")
{
    Uart u;
    u.out_(0, 'h');
    u.out_(0, 'i');
    CHECK(u.out == "hi");
    CHECK((u.in(5) & 0x60) == 0x60);
}

TEST_CASE("received bytes are read in order and set data-ready")
{
    Uart u;
    CHECK((u.in(5) & 1) == 0);
    const uint8_t data[] = {'a', 'b'};
    CHECK(u.dev.push_input(data) == 2);
    CHECK((u.in(5) & 1) == 1);
    CHECK(u.in(0) == 'a');
    CHECK(u.in(0) == 'b');
    CHECK((u.in(5) & 1) == 0);
}

TEST_CASE("input buffer is bounded")
{
    Uart u;
    std::vector<uint8_t> big(Serial16550::kInputCapacity + 10, 'x');
    CHECK(u.dev.push_input(big) == Serial16550::kInputCapacity);
}

TEST_CASE("rx interrupt follows data and IER, gated by OUT2")
{
    Uart u;
    u.out_(4, 0x08);  // OUT2
    u.out_(1, 0x01);  // rx interrupt
    CHECK_FALSE(u.line());
    const uint8_t c = 'z';
    u.dev.push_input({&c, 1});
    CHECK(u.line());
    CHECK((u.in(2) & 0x0f) == 0x04);
    u.in(0);
    CHECK_FALSE(u.line());
    CHECK((u.in(2) & 0x01) == 1);
    u.out_(4, 0x00);  // OUT2 off: no interrupt reaches the PIC
    u.dev.push_input({&c, 1});
    CHECK_FALSE(u.line());
}

TEST_CASE("THRE interrupt on enable, acknowledged by reading IIR")
{
    Uart u;
    u.out_(4, 0x08);
    u.out_(1, 0x02);
    CHECK(u.line());
    CHECK((u.in(2) & 0x0f) == 0x02);
    CHECK_FALSE(u.line());
    u.out_(0, 'x');  // sending makes THR empty again
    CHECK(u.line());
}

TEST_CASE("loopback as Linux's 8250 probe expects")
{
    Uart u;
    u.out_(4, 0x10 | 0x0A);  // LOOP | RTS | OUT2
    CHECK((u.in(6) & 0xF0) == 0x90);
    u.out_(0, 'q');
    CHECK(u.out.empty());
    CHECK(u.in(0) == 'q');
}

TEST_CASE("FIFO enable shows in IIR; divisor latch and scratch")
{
    Uart u;
    u.out_(2, 0x07);
    CHECK((u.in(2) & 0xC0) == 0xC0);
    u.out_(3, 0x83);
    u.out_(0, 0x01);
    u.out_(1, 0x00);
    CHECK(u.in(0) == 0x01);
    u.out_(3, 0x03);
    u.out_(7, 0x5a);
    CHECK(u.in(7) == 0x5a);
}
