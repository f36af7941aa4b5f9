#include "devices/raw_terminal.hpp"

#include <unistd.h>

#include <atomic>
#include <utility>

namespace vvmm::dev {
namespace {
// A copy for signal handlers, which cannot reach the RAII object.
std::atomic<int> g_fd{-1};
termios g_saved{};
}  // namespace

Result<RawTerminal> RawTerminal::enter(int fd)
{
    termios saved{};
    if (::tcgetattr(fd, &saved) < 0) return errno_error("tcgetattr on the console");
    termios raw = saved;
    // Like cfmakeraw, but keep output post-processing off too: the guest sends \r\n itself.
    raw.c_iflag &= ~static_cast<tcflag_t>(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON);
    raw.c_oflag &= ~static_cast<tcflag_t>(OPOST);
    raw.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL | ICANON | ISIG | IEXTEN);
    raw.c_cflag &= ~static_cast<tcflag_t>(CSIZE | PARENB);
    raw.c_cflag |= CS8;
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    g_saved = saved;
    g_fd = fd;
    if (::tcsetattr(fd, TCSANOW, &raw) < 0) {
        g_fd = -1;
        return errno_error("tcsetattr on the console");
    }
    return RawTerminal(fd, saved);
}

RawTerminal::RawTerminal(RawTerminal&& o) noexcept : fd_(std::exchange(o.fd_, -1)), saved_(o.saved_) {}

RawTerminal::~RawTerminal()
{
    if (fd_ >= 0) {
        ::tcsetattr(fd_, TCSANOW, &saved_);
        g_fd = -1;
    }
}

void restore_saved_terminal()
{
    const int fd = g_fd.load();
    if (fd >= 0) ::tcsetattr(fd, TCSANOW, &g_saved);
}

}  // namespace vvmm::dev
