#include "vmm/base/log.hpp"

#include <algorithm>
#include <mutex>

namespace vvmm {
namespace {
std::atomic<LogLevel> g_level{LogLevel::warn};
std::mutex g_mutex;
}  // namespace

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_line(LogLevel level, const std::string& message)
{
    if (level > g_level.load()) return;
    static const char* const names[] = {"error", "warning", "info", "debug"};
    std::lock_guard lock(g_mutex);
    // One prefix per line: a message listing several mistakes stays one
    // line per mistake, and text from elsewhere cannot forge a line.
    size_t start = 0;
    do {
        const size_t end = std::min(message.find('\n', start), message.size());
        // \r first: the console may be in raw mode, where \n alone does not return the carriage.
        std::fprintf(stderr, "vvmm: %s: %.*s\r\n", names[static_cast<int>(level)], static_cast<int>(end - start),
                     message.data() + start);
        start = end + 1;
    } while (start < message.size());
}

void RateLimitedLog::warn(const std::string& message)
{
    using namespace std::chrono;
    const int64_t now = duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
    int64_t start = window_start_ns_.load();
    if (now - start > duration_cast<nanoseconds>(period_).count() &&
        window_start_ns_.compare_exchange_strong(start, now)) {
        in_window_ = 0;
    }
    if (in_window_.fetch_add(1) >= burst_) {
        suppressed_.fetch_add(1);
        return;
    }
    const int dropped = suppressed_.exchange(0);
    log_warn(dropped ? message + " (" + std::to_string(dropped) + " similar messages suppressed)" : message);
}

}  // namespace vvmm
