#include "net/net_spec.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <map>

namespace vvmm::net {
namespace {

int hex_digit(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

Result<uint16_t> parse_port(std::string_view text, const std::string& whole)
{
    if (text.empty() || text.size() > 5 || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return Error("'" + whole + "' has no valid port (expected 1..65535 after ':')");
    unsigned value = 0;
    for (char c : text) value = value * 10 + static_cast<unsigned>(c - '0');
    if (value == 0 || value > 65535) return Error("port " + std::string(text) + " in '" + whole + "' is out of range (1..65535)");
    return static_cast<uint16_t>(value);
}

}  // namespace

MacAddress MacAddress::from_bytes(const uint8_t* p)
{
    std::array<uint8_t, 6> bytes;
    std::memcpy(bytes.data(), p, bytes.size());
    return MacAddress(bytes);
}

Result<MacAddress> MacAddress::parse(std::string_view text)
{
    const std::string shown(text);
    const Error bad("'" + shown + "' is not a MAC address (expected six hex bytes like 52:54:00:12:34:56)");
    if (text.size() != 17) return bad;
    std::array<uint8_t, 6> bytes;
    for (size_t i = 0; i < 6; ++i) {
        const int hi = hex_digit(text[i * 3]);
        const int lo = hex_digit(text[i * 3 + 1]);
        if (hi < 0 || lo < 0) return bad;
        if (i < 5 && text[i * 3 + 2] != ':' && text[i * 3 + 2] != '-') return bad;
        bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
    }
    return MacAddress(bytes);
}

MacAddress MacAddress::derived_from_id(std::string_view id)
{
    // FNV-1a: stable across hosts and builds, unlike std::hash.
    uint32_t h = 2166136261u;
    for (char c : id) {
        h ^= static_cast<uint8_t>(c);
        h *= 16777619u;
    }
    // 0x52: unicast, locally administered (the prefix QEMU uses as well).
    return MacAddress({0x52, 0x54, static_cast<uint8_t>(h >> 24), static_cast<uint8_t>(h >> 16),
                       static_cast<uint8_t>(h >> 8), static_cast<uint8_t>(h)});
}

uint64_t MacAddress::as_u64() const
{
    uint64_t v = 0;
    for (uint8_t b : bytes_) v = v << 8 | b;
    return v;
}

std::string MacAddress::to_string() const
{
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (size_t i = 0; i < bytes_.size(); ++i) {
        if (i) s += ':';
        s += digits[bytes_[i] >> 4];
        s += digits[bytes_[i] & 15];
    }
    return s;
}

SocketAddress::SocketAddress(Family family, const std::array<uint8_t, 16>& address, uint16_t port)
    : family_(family), address_(address), port_(port)
{
    if (family_ == Family::ipv4) std::fill(address_.begin() + 4, address_.end(), 0);
}

Result<SocketAddress> SocketAddress::parse(std::string_view text)
{
    const std::string whole(text);
    const Error bad("'" + whole + "' is not an address (expected IPv4:port like 192.0.2.1:7001 or [IPv6]:port)");
    std::array<uint8_t, 16> bytes{};
    if (!text.empty() && text.front() == '[') {
        const size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return bad;
        const std::string host(text.substr(1, close - 1));
        if (::inet_pton(AF_INET6, host.c_str(), bytes.data()) != 1) return bad;
        TRY_ASSIGN(uint16_t port, parse_port(text.substr(close + 2), whole));
        return SocketAddress(Family::ipv6, bytes, port);
    }
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return bad;
    const std::string host(text.substr(0, colon));
    if (::inet_pton(AF_INET, host.c_str(), bytes.data()) != 1) return bad;
    TRY_ASSIGN(uint16_t port, parse_port(text.substr(colon + 1), whole));
    return SocketAddress(Family::ipv4, bytes, port);
}

bool SocketAddress::is_wildcard() const
{
    return std::all_of(address_.begin(), address_.end(), [](uint8_t b) { return b == 0; });
}

std::string SocketAddress::to_string() const
{
    char host[INET6_ADDRSTRLEN] = {};
    if (family_ == Family::ipv4) {
        ::inet_ntop(AF_INET, address_.data(), host, sizeof host);
        return std::string(host) + ":" + std::to_string(port_);
    }
    ::inet_ntop(AF_INET6, address_.data(), host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(port_);
}

Result<void> validate_peer_id(std::string_view id)
{
    if (id.empty() || id.size() > kMaxPeerIdLength)
        return Error("id '" + std::string(id) + "' must be 1.." + std::to_string(kMaxPeerIdLength) + " characters");
    for (char c : id) {
        const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                             c == '.' || c == '_' || c == '-';
        if (!allowed) return Error("id '" + std::string(id) + "' may only contain letters, digits, '.', '_' and '-'");
    }
    return ok();
}

Result<void> validate_peer_net_spec(const PeerNetSpec& spec)
{
    TRY(validate_peer_id(spec.id));
    if (spec.listen.port() == 0) return Error("listen address " + spec.listen.to_string() + " has port 0");
    if (spec.listen.is_wildcard())
        return Error("listen address " + spec.listen.to_string() +
                     " is a wildcard; give the address the other VMMs dial, it identifies this VMM");
    for (size_t i = 0; i < spec.peers.size(); ++i) {
        const SocketAddress& peer = spec.peers[i];
        if (peer == spec.listen) return Error("listen address " + spec.listen.to_string() + " is also listed in peers");
        if (peer.is_wildcard()) return Error("peer " + peer.to_string() + " is a wildcard address, not a VMM to dial");
        if (peer.port() == 0) return Error("peer " + peer.to_string() + " has port 0");
        if (std::find(spec.peers.begin(), spec.peers.begin() + static_cast<std::ptrdiff_t>(i), peer) !=
            spec.peers.begin() + static_cast<std::ptrdiff_t>(i))
            return Error("peer " + peer.to_string() + " is listed twice");
    }
    if (spec.mac.is_multicast())
        return Error("mac " + spec.mac.to_string() + " is a multicast address; a guest needs a unicast MAC");
    if (spec.mac.is_zero()) return Error("mac 00:00:00:00:00:00 is not a usable address");
    return ok();
}

Result<PeerNetSpec> peer_net_spec(const vmm::NicDescription& nic)
{
    PeerNetSpec spec;
    spec.id = nic.id;
    TRY(validate_peer_id(spec.id));
    auto listen = SocketAddress::parse(nic.listen);
    if (!listen) return listen.error().context("listen");
    spec.listen = listen.value();
    for (const auto& item : nic.peers) {
        if (item.empty()) return Error("peers: peers= has an empty entry (separate addresses with a single ';')");
        auto address = SocketAddress::parse(item);
        if (!address) return address.error().context("peers");
        spec.peers.push_back(address.value());
    }
    if (!nic.mac.empty()) {
        TRY_ASSIGN(spec.mac, MacAddress::parse(nic.mac));
    } else {
        spec.mac = MacAddress::derived_from_id(spec.id);
        spec.mac_derived = true;
    }
    TRY(validate_peer_net_spec(spec));
    return spec;
}

vmm::NicDescription nic_description(const PeerNetSpec& spec)
{
    vmm::NicDescription nic{spec.id, spec.listen.to_string(), {}, spec.mac.to_string()};
    for (const auto& p : spec.peers) nic.peers.push_back(p.to_string());
    return nic;
}

Result<PeerNetSpec> parse_net_spec(std::string_view text)
{
    TRY_ASSIGN(auto nic, vmm::parse_nic_flag(text));
    return peer_net_spec(nic);
}

}  // namespace vvmm::net
