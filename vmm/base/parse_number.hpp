// Numbers in text we did not write (directory names, manifest fields): the
// whole string must be the number and it must fit, or there is no number.
// Never an exception, unlike std::stoul and friends, which throw on
// "99999999999999999999" and accept " 12abc".
#pragma once

#include <charconv>
#include <optional>
#include <string_view>
#include <type_traits>

namespace vvmm {

// Digits only (no sign, no spaces), in `base`.
template <typename T>
std::optional<T> parse_unsigned(std::string_view text, int base = 10)
{
    static_assert(std::is_integral_v<T> && std::is_unsigned_v<T>);
    T value{};
    const char* end = text.data() + text.size();
    const auto [stop, ec] = std::from_chars(text.data(), end, value, base);
    if (text.empty() || ec != std::errc() || stop != end) return std::nullopt;
    return value;
}

}  // namespace vvmm
