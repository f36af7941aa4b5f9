#include "vmm/base/size_parse.hpp"

#include <cctype>
#include <string>

namespace vvmm {

Result<uint64_t> parse_size(std::string_view text)
{
    const std::string shown(text);
    size_t i = 0;
    uint64_t value = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        const uint64_t digit = static_cast<uint64_t>(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10) return Error("size '" + shown + "' is too large");
        value = value * 10 + digit;
        ++i;
    }
    if (i == 0) return Error("'" + shown + "' is not a size (expected e.g. 512M or 2G)");
    std::string suffix(text.substr(i));
    for (auto& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (suffix.size() >= 2 && suffix.substr(suffix.size() - 2) == "IB") suffix.resize(suffix.size() - 2);
    else if (suffix.size() >= 2 && suffix.back() == 'B') suffix.pop_back();
    unsigned shift = 0;
    if (suffix.empty() || suffix == "B") shift = 0;
    else if (suffix == "K") shift = 10;
    else if (suffix == "M") shift = 20;
    else if (suffix == "G") shift = 30;
    else if (suffix == "T") shift = 40;
    else return Error("'" + shown + "' has an unknown size suffix (use K, M, G or T)");
    if (shift && value > (UINT64_MAX >> shift)) return Error("size '" + shown + "' is too large");
    return value << shift;
}

std::string format_size(uint64_t bytes)
{
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) {
        bytes /= 1024;
        ++u;
    }
    return std::to_string(bytes) + " " + units[u];
}

}  // namespace vvmm
