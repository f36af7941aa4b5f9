// Logging to stderr. Guest-caused problems go through RateLimitedLog so a
// hostile guest cannot flood the host's logs.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>

namespace vvmm {

enum class LogLevel { error = 0, warn = 1, info = 2, debug = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_line(LogLevel level, const std::string& message);

inline void log_error(const std::string& m) { log_line(LogLevel::error, m); }
inline void log_warn(const std::string& m) { log_line(LogLevel::warn, m); }
inline void log_info(const std::string& m) { log_line(LogLevel::info, m); }
inline void log_debug(const std::string& m) { log_line(LogLevel::debug, m); }

// Lets through a burst of `burst` messages per `period`; counts the rest and
// reports how many were suppressed with the next message that passes.
class RateLimitedLog {
public:
    explicit RateLimitedLog(int burst = 10, std::chrono::milliseconds period = std::chrono::seconds(5))
        : burst_(burst), period_(period) {}
    void warn(const std::string& message);

private:
    int burst_;
    std::chrono::milliseconds period_;
    std::atomic<int64_t> window_start_ns_{0};
    std::atomic<int> in_window_{0};
    std::atomic<int> suppressed_{0};
};

}  // namespace vvmm
