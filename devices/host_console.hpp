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

struct ConsoleSpec {
    enum class Kind { stdio, file } kind = Kind::stdio;
    std::string path;
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

    void write(uint8_t byte);
    // Starts forwarding stdin to the UART (stdio consoles only).
    void connect_input(Serial16550& uart);

private:
    HostConsole() = default;
    void input_loop(Serial16550& uart);
    bool deliver(Serial16550& uart, std::span<const uint8_t> bytes);

    ConsoleSpec spec_;
    UniqueFd out_fd_;     // the log file, when there is one
    int out_ = 1;
    std::optional<RawTerminal> raw_;
    UniqueFd stop_fd_;    // eventfd that ends the input thread
    std::thread input_;
    std::function<void()> on_quit_;
};

}  // namespace vvmm::dev
