// Puts a terminal in raw mode for the guest console and always gives it back:
// on destruction, and from fatal-signal handlers (restore_saved_terminal()).
#pragma once

#include <termios.h>

#include "vmm/base/result.hpp"

namespace vvmm::dev {

class RawTerminal {
public:
    static Result<RawTerminal> enter(int fd);
    RawTerminal(RawTerminal&& o) noexcept;
    RawTerminal& operator=(RawTerminal&&) = delete;
    RawTerminal(const RawTerminal&) = delete;
    ~RawTerminal();

private:
    RawTerminal(int fd, const termios& saved) : fd_(fd), saved_(saved) {}
    int fd_ = -1;
    termios saved_{};
};

// Async-signal-safe: restores the terminal saved by the live RawTerminal, if any.
void restore_saved_terminal();

}  // namespace vvmm::dev
