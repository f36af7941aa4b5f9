// Times as people and files read them.
#pragma once

#include <chrono>
#include <ctime>
#include <string>

namespace vvmm {

// Now, in UTC, ISO 8601 ("2026-11-22T08:00:00Z").
inline std::string utc_now()
{
    char b[32];
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    std::strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return b;
}

inline double ms_since(std::chrono::steady_clock::time_point t)
{
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace vvmm
