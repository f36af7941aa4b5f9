// Reading JSON that comes from files, peers or controllers (manifests,
// cluster manifests, control requests): text that does not parse, a missing
// field, a wrong type or an out-of-range number is an Error saying which,
// never an exception or undefined behaviour.
#pragma once

#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "vmm/base/parse_number.hpp"
#include "vmm/base/result.hpp"

namespace vvmm {

// The document in `text`; an error is nlohmann's message without its
// "[json.exception.parse_error.101] " prefix.
inline Result<nlohmann::json> parse_json(std::string_view text)
{
    try {
        return nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        std::string what = e.what();
        if (const size_t bracket = what.find("] "); what.starts_with("[json.exception.") && bracket != what.npos)
            what.erase(0, bracket + 2);
        return Error(what);
    }
}

// Digests are written in manifests as 16 lower-case hex digits.
inline std::string hex_digest(uint64_t v)
{
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

inline Result<uint64_t> parse_hex_digest(const std::string& s)
{
    const auto v = parse_unsigned<uint64_t>(s, 16);
    if (s.size() != 16 || s.find_first_not_of("0123456789abcdef") != std::string::npos || !v)
        return Error("bad checksum '" + s + "' (not 16 lower-case hex digits)");
    return *v;
}

// Field readers that turn a wrong type or a missing field into an Error
// naming it (nlohmann throws; exceptions stop here).
template <typename T>
Result<T> field(const nlohmann::json& j, const char* name)
{
    if (!j.is_object() || !j.contains(name)) return Error(std::string("missing field '") + name + "'");
    const nlohmann::json& v = j.at(name);
    const auto wrong = [&] { return Error(std::string("field '") + name + "' has the wrong type"); };
    // Numbers are checked by hand: converting a float or an out-of-range
    // integer with get<> is undefined behaviour, not an exception.
    if constexpr (std::is_same_v<T, bool>) {
        if (!v.is_boolean()) return wrong();
        return v.get<bool>();
    } else if constexpr (std::is_integral_v<T> && std::is_unsigned_v<T>) {
        if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0)) return wrong();
        const uint64_t n = v.get<uint64_t>();
        if (n > std::numeric_limits<T>::max()) return Error(std::string("field '") + name + "' is out of range");
        return static_cast<T>(n);
    } else if constexpr (std::is_integral_v<T>) {
        if (!v.is_number_integer()) return wrong();
        const int64_t n = v.get<int64_t>();
        if (n < std::numeric_limits<T>::min() || n > std::numeric_limits<T>::max())
            return Error(std::string("field '") + name + "' is out of range");
        return static_cast<T>(n);
    } else {
        try {
            return v.get<T>();
        } catch (const nlohmann::json::exception&) {
            return wrong();
        }
    }
}

// For optional fields of messages from peers: the value, or `fallback` when
// it is missing or of the wrong type (never an exception).
template <typename T>
T field_or(const nlohmann::json& j, const char* name, T fallback)
{
    auto v = field<T>(j, name);
    return v ? std::move(v).value() : std::move(fallback);
}

}  // namespace vvmm
