#include "vmm/base/duration_parse.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace vvmm {

Result<Seconds> parse_duration(std::string_view text)
{
    const std::string quoted = "'" + std::string(text.substr(0, 32)) + "'";
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, std::chars_format::fixed);
    if (ec != std::errc() || end == text.data()) return Error(quoted + " is not a duration (e.g. 30s, 5m, 3h, 2d)");
    const std::string_view unit(end, static_cast<size_t>(text.data() + text.size() - end));
    double scale = 0;
    if (unit == "s") scale = 1;
    else if (unit == "m") scale = 60;
    else if (unit == "h") scale = 3600;
    else if (unit == "d") scale = 86400;
    else if (unit.empty()) return Error(quoted + " has no unit (s, m, h or d, e.g. 30s, 5m, 3h, 2d)");
    else return Error(quoted + ": unknown unit '" + std::string(unit.substr(0, 8)) + "' (s, m, h or d)");
    const double seconds = value * scale;
    constexpr double kMax = 100.0 * 365 * 86400;
    if (!std::isfinite(seconds) || seconds <= 0 || seconds > kMax)
        return Error(quoted + " is out of range (more than 0, at most 100 years)");
    return Seconds(seconds);
}

std::string format_duration(Seconds d)
{
    const double s = d.count();
    char b[48];
    if (s < 120) std::snprintf(b, sizeof b, "%.3g s", s);
    else if (s < 2 * 3600) std::snprintf(b, sizeof b, "%.3g min", s / 60);
    else if (s < 3 * 86400) std::snprintf(b, sizeof b, "%.3g h", s / 3600);
    else if (s < 365 * 86400) std::snprintf(b, sizeof b, "%.4g d", s / 86400);
    else std::snprintf(b, sizeof b, "%.4g years", s / (365 * 86400));
    return b;
}

}  // namespace vvmm
