// Where the guest's serial console goes on the host: stdout (and stdin, raw
// if it is a terminal, with Ctrl-A x to quit) or an append-only log file.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "devices/raw_terminal.hpp"
#include "devices/serial_16550.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::dev {

// A guest can print for ever: a console log file stops growing at this many
// bytes (the file's size, earlier runs' output included, since restores
// append to the same file). One marker line then says output was cut, and
// the rest is dropped: the start of the output (the boot, the first error)
// is what explains a runaway guest, and a file that is only ever appended to
// stays safe for whoever follows it (tail -f, the tests). A terminal has no cap.
inline constexpr uint64_t kDefaultConsoleLogCap = 64ull << 20;

struct ConsoleSpec {
    enum class Kind { stdio, file } kind = Kind::stdio;
    std::string path;
    uint64_t max_bytes = kDefaultConsoleLogCap;  // file consoles
};

// "stdio" or "file:PATH".
Result<ConsoleSpec> parse_console_spec(const std::string& text);

// Turns typed bytes into bytes for the guest, catching the escape sequence
// (Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A). Pure, unit-tested.
class EscapeFilter {
public:
    static constexpr uint8_t kEscape = 0x01;
    // Appends what the guest should get to `out`; returns true if the user asked to quit.
    bool feed(uint8_t byte, std::string& out);

private:
    bool after_escape_ = false;
};

class HostConsole {
public:
    static Result<std::unique_ptr<HostConsole>> create(const ConsoleSpec& spec, std::function<void()> on_quit);
    ~HostConsole();

    // Called with the UART's lock held (one writer at a time).
    void write(uint8_t byte);
    // Starts forwarding stdin to the UART (stdio consoles only).
    void connect_input(Serial16550& uart);

private:
    HostConsole() = default;
    void input_loop(Serial16550& uart);
    bool deliver(Serial16550& uart, std::span<const uint8_t> bytes);

    ConsoleSpec spec_;
    void write_out(const void* data, size_t size);

    UniqueFd out_fd_;     // the log file, when there is one
    int out_ = 1;
    uint64_t log_bytes_ = 0;  // the log file's size
    bool log_capped_ = false;
    std::optional<RawTerminal> raw_;
    UniqueFd stop_fd_;    // eventfd that ends the input thread
    std::thread input_;
    std::function<void()> on_quit_;
};

}  // namespace vvmm::dev
