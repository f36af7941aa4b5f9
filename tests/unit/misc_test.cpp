#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>

#include "devices/host_console.hpp"
#include "vmm/io_bus.hpp"
#include "vmm/long_mode_setup.hpp"
#include "vmm/vm_description.hpp"

using namespace vvmm;

TEST_CASE("GDT descriptors match the well-known flat encodings")
{
    CHECK(vmm::gdt_entry(0xA09B, 0, 0xfffff) == 0x00AF9B000000FFFFull);
    CHECK(vmm::gdt_entry(0xC093, 0, 0xfffff) == 0x00CF93000000FFFFull);
    CHECK(vmm::gdt_entry(0x008B, 0x12345678, 0x67) == 0x12008B3456780067ull);
}

TEST_CASE("vm config ranges")
{
    vmm::VmDescription c;
    c.kernel = "k";
    CHECK(vmm::validate_vm_description(c).ok());
    c.cpus = 0;
    CHECK(vmm::validate_vm_description(c).error().message().find("--cpus 0 is out of range") != std::string::npos);
    c.cpus = 33;
    CHECK_FALSE(vmm::validate_vm_description(c).ok());
    c.cpus = 32;
    CHECK(vmm::validate_vm_description(c).ok());
    c.mem_bytes = 1 << 20;
    CHECK(vmm::validate_vm_description(c).error().message().find("--mem") != std::string::npos);
    c.mem_bytes = (512ull << 20) + 4096;
    CHECK_FALSE(vmm::validate_vm_description(c).ok());
    c.mem_bytes = 2ull << 40;
    CHECK_FALSE(vmm::validate_vm_description(c).ok());
    c.mem_bytes = 512ull << 20;
    c.kernel.clear();
    CHECK_FALSE(vmm::validate_vm_description(c).ok());
}

TEST_CASE("default command line comes first, user's is appended")
{
    CHECK(vmm::cmdline_with_default("") == vmm::kDefaultCmdline);
    CHECK(vmm::cmdline_with_default("test=smp") == std::string(vmm::kDefaultCmdline) + " test=smp");
}

TEST_CASE("console spec")
{
    CHECK(dev::parse_console_spec("stdio")->kind == dev::ConsoleSpec::Kind::stdio);
    auto f = dev::parse_console_spec("file:/tmp/x.log");
    REQUIRE(f.ok());
    CHECK(f->path == "/tmp/x.log");
    CHECK_FALSE(dev::parse_console_spec("file:").ok());
    CHECK_FALSE(dev::parse_console_spec("tty").ok());
}

TEST_CASE("escape sequence: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A")
{
    dev::EscapeFilter f;
    std::string out;
    CHECK_FALSE(f.feed('a', out));
    CHECK_FALSE(f.feed(0x01, out));
    CHECK_FALSE(f.feed(0x01, out));
    CHECK_FALSE(f.feed(0x01, out));
    CHECK_FALSE(f.feed('b', out));
    CHECK(out == std::string("a\x01\x01") + "b");
    CHECK_FALSE(f.feed(0x01, out));
    CHECK(f.feed('x', out));
}

TEST_CASE("a console log stops at its cap with one marker line, earlier runs' output included")
{
    char dir[] = "/tmp/vvmm-console-XXXXXX";
    REQUIRE(::mkdtemp(dir));
    const std::string path = std::string(dir) + "/console.log";
    auto read_all = [&] {
        std::ifstream f(path, std::ios::binary);
        return std::string(std::istreambuf_iterator<char>(f), {});
    };
    dev::ConsoleSpec spec{dev::ConsoleSpec::Kind::file, path, 100};
    {
        auto c = dev::HostConsole::create(spec, [] {});
        REQUIRE(c.ok());
        for (int i = 0; i < 60; ++i) c.value()->write('a');
    }
    {
        // A restore appends to the same file: the cap counts what is there.
        auto c = dev::HostConsole::create(spec, [] {});
        REQUIRE(c.ok());
        for (int i = 0; i < 5000; ++i) c.value()->write('b');
    }
    const std::string marker = "\n[vvmm: console output truncated at 100 bytes; the rest of the guest's output is dropped]\n";
    CHECK(read_all() == std::string(60, 'a') + std::string(40, 'b') + marker);
    {
        auto c = dev::HostConsole::create(spec, [] {});
        REQUIRE(c.ok());
        c.value()->write('c');
    }
    CHECK(read_all().size() == 100 + 2 * marker.size());  // one marker per run that tried to write
    CHECK(dev::ConsoleSpec{}.max_bytes == 64ull << 20);
    std::filesystem::remove_all(dir);
}

namespace {
struct Recorder : vmm::BusDevice {
    uint64_t last = ~0ull;
    void read(uint64_t off, std::span<uint8_t> d) override
    {
        last = off;
        for (auto& b : d) b = 0x42;
    }
    void write(uint64_t off, std::span<const uint8_t>) override { last = off; }
};
}  // namespace

TEST_CASE("io bus dispatches by range and reads all-ones where nothing is")
{
    vmm::IoBus bus("test");
    auto a = std::make_shared<Recorder>();
    REQUIRE(bus.add(0x3f8, 8, a).ok());
    CHECK_FALSE(bus.add(0x3fc, 8, a).ok());
    CHECK_FALSE(bus.add(0x3f0, 9, a).ok());
    CHECK(bus.add(0x3f0, 8, a).ok());
    uint8_t b[2] = {};
    CHECK(bus.read(0x3fd, {b, 1}));
    CHECK(a->last == 5);
    CHECK(b[0] == 0x42);
    CHECK_FALSE(bus.read(0x500, {b, 2}));
    CHECK(b[0] == 0xff);
    CHECK(b[1] == 0xff);
    CHECK_FALSE(bus.read(0x3ff, {b, 2}));  // straddles the end of the window
}
