#include "devices/host_console.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>

namespace vvmm::dev {

Result<ConsoleSpec> parse_console_spec(const std::string& text)
{
    if (text == "stdio") return ConsoleSpec{ConsoleSpec::Kind::stdio, {}};
    if (text.rfind("file:", 0) == 0 && text.size() > 5) return ConsoleSpec{ConsoleSpec::Kind::file, text.substr(5)};
    return Error("--console must be 'stdio' or 'file:PATH', not '" + text + "'");
}

bool EscapeFilter::feed(uint8_t byte, std::string& out)
{
    if (after_escape_) {
        after_escape_ = false;
        if (byte == 'x' || byte == 'X') return true;
        if (byte == kEscape) {
            out.push_back(static_cast<char>(kEscape));
            return false;
        }
        out.push_back(static_cast<char>(kEscape));  // not a command: pass both through
        out.push_back(static_cast<char>(byte));
        return false;
    }
    if (byte == kEscape) {
        after_escape_ = true;
        return false;
    }
    out.push_back(static_cast<char>(byte));
    return false;
}

Result<std::unique_ptr<HostConsole>> HostConsole::create(const ConsoleSpec& spec, std::function<void()> on_quit)
{
    std::unique_ptr<HostConsole> c(new HostConsole());
    c->spec_ = spec;
    c->on_quit_ = std::move(on_quit);
    if (spec.kind == ConsoleSpec::Kind::file) {
        c->out_fd_ = UniqueFd(::open(spec.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
        if (!c->out_fd_.valid()) return errno_error("cannot open console log '" + spec.path + "'");
        c->out_ = c->out_fd_.get();
        struct stat st {};
        if (::fstat(c->out_, &st) < 0) return errno_error("cannot stat console log '" + spec.path + "'");
        c->log_bytes_ = S_ISREG(st.st_mode) ? static_cast<uint64_t>(st.st_size) : 0;
    }
    return c;
}

HostConsole::~HostConsole()
{
    if (input_.joinable()) {
        const uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(stop_fd_.get(), &one, sizeof one);
        input_.join();
    }
}

void HostConsole::write(uint8_t byte)
{
    if (out_fd_.valid()) {
        if (log_capped_) return;
        if (log_bytes_ >= spec_.max_bytes) {
            log_capped_ = true;
            const std::string marker = "\n[vvmm: console output truncated at " + std::to_string(spec_.max_bytes) +
                                       " bytes; the rest of the guest's output is dropped]\n";
            write_out(marker.data(), marker.size());
            return;
        }
        ++log_bytes_;
    }
    write_out(&byte, 1);
}

void HostConsole::write_out(const void* data, size_t size)
{
    // A closed stdout must not stop the guest: the bytes are lost, like on a cut serial line.
    while (::write(out_, data, size) < 0 && errno == EINTR) {
    }
}

void HostConsole::connect_input(Serial16550& uart)
{
    if (spec_.kind != ConsoleSpec::Kind::stdio) return;
    stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (::isatty(0)) {
        auto raw = RawTerminal::enter(0);
        if (raw.ok()) raw_.emplace(std::move(raw).value());
    }
    input_ = std::thread([this, &uart] { input_loop(uart); });
}

bool HostConsole::deliver(Serial16550& uart, std::span<const uint8_t> bytes)
{
    // The UART buffer is bounded: wait for the guest to read rather than drop keystrokes.
    while (!bytes.empty()) {
        bytes = bytes.subspan(uart.push_input(bytes));
        if (bytes.empty()) break;
        pollfd p{stop_fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, 1) > 0) return false;
    }
    return true;
}

void HostConsole::input_loop(Serial16550& uart)
{
    EscapeFilter escape;
    const bool interactive = raw_.has_value();
    uint8_t buf[256];
    for (;;) {
        pollfd fds[2] = {{0, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (fds[1].revents) return;
        const ssize_t n = ::read(0, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // EOF: the guest keeps running without input
        std::string out;
        for (ssize_t i = 0; i < n; ++i) {
            if (interactive && escape.feed(buf[i], out)) {
                on_quit_();
                return;
            }
            if (!interactive) out.push_back(static_cast<char>(buf[i]));
        }
        if (!deliver(uart, {reinterpret_cast<const uint8_t*>(out.data()), out.size()})) return;
    }
}

}  // namespace vvmm::dev
