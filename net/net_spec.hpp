// The user's description of a VM's network: `--net peer,id=a,listen=H:P,
// peers=H:P;H:P,mac=M`, parsed and validated into plain values (no sockets).
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::net {

class MacAddress {
public:
    constexpr MacAddress() = default;
    constexpr explicit MacAddress(const std::array<uint8_t, 6>& bytes) : bytes_(bytes) {}
    // Reads the first six bytes of `p` (e.g. an Ethernet header's address).
    static MacAddress from_bytes(const uint8_t* p);
    // Six hex bytes separated by ':' or '-', e.g. "52:54:00:12:34:56".
    static Result<MacAddress> parse(std::string_view text);
    // A locally administered unicast MAC (52:54:xx:xx:xx:xx) that is a stable
    // hash of `id`, for VMs whose MAC the user did not give.
    static MacAddress derived_from_id(std::string_view id);

    const std::array<uint8_t, 6>& bytes() const { return bytes_; }
    // Group bit: broadcast and multicast frames go to every peer.
    bool is_multicast() const { return (bytes_[0] & 1) != 0; }
    bool is_zero() const { return bytes_ == std::array<uint8_t, 6>{}; }
    uint64_t as_u64() const;
    std::string to_string() const;  // lower-case, ':'-separated

    auto operator<=>(const MacAddress&) const = default;

private:
    std::array<uint8_t, 6> bytes_{};
};

// A numeric IP address and a port. The listen address identifies a VMM in
// the mesh, so host names (which can resolve differently on each host) are
// not accepted.
class SocketAddress {
public:
    enum class Family : uint8_t { ipv4 = 4, ipv6 = 6 };

    SocketAddress() = default;
    SocketAddress(Family family, const std::array<uint8_t, 16>& address, uint16_t port);
    // "192.0.2.1:7001" or "[2001:db8::1]:7001"; port 1..65535.
    static Result<SocketAddress> parse(std::string_view text);

    Family family() const { return family_; }
    // IPv4 addresses use the first 4 bytes; the rest are zero.
    const std::array<uint8_t, 16>& address() const { return address_; }
    uint16_t port() const { return port_; }
    bool is_wildcard() const;
    std::string to_string() const;

    // A total order that every VMM computes the same way: it decides which
    // side of a pair dials (see peer_mesh.hpp).
    auto operator<=>(const SocketAddress&) const = default;

private:
    Family family_ = Family::ipv4;
    std::array<uint8_t, 16> address_{};
    uint16_t port_ = 0;
};

struct PeerNetSpec {
    std::string id;                    // this VMM's name in the cluster, [A-Za-z0-9._-]{1,64}
    SocketAddress listen;              // where the other VMMs reach this one
    std::vector<SocketAddress> peers;  // every other VMM of the cluster (may be empty)
    MacAddress mac;                    // the guest's MAC
    bool mac_derived = false;          // true if mac= was omitted and `mac` comes from the id
};

inline constexpr size_t kMaxPeerIdLength = 64;

// Parses "peer,key=value,...". Keys: id (required), listen (required),
// peers (';'-separated, optional: a VM alone has none), mac (optional,
// default MacAddress::derived_from_id(id)). Errors name the offending part
// but not the flag, so callers add it: `.context("--net")`.
Result<PeerNetSpec> parse_net_spec(std::string_view text);
// The same checks for a NIC already split into values (a checkpoint's, a
// cluster file's); nic_description() is the way back.
Result<PeerNetSpec> peer_net_spec(const vmm::NicDescription& nic);
vmm::NicDescription nic_description(const PeerNetSpec& spec);

Result<void> validate_peer_id(std::string_view id);

// The rules parse_net_spec() enforces, for specs built some other way (e.g.
// from a cluster config): valid id, specific listen address not among the
// peers, no duplicate peer, unicast non-zero MAC.
Result<void> validate_peer_net_spec(const PeerNetSpec& spec);

}  // namespace vvmm::net
