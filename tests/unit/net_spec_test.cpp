#include <doctest/doctest.h>

#include <string>

#include "net/net_spec.hpp"

using namespace vvmm::net;

namespace {

std::string error_of(std::string_view text)
{
    auto r = parse_net_spec(text);
    REQUIRE_FALSE(r.ok());
    return r.error().message();
}

bool mentions(const std::string& message, const std::string& part) { return message.find(part) != std::string::npos; }

}  // namespace

TEST_CASE("MAC addresses parse and format")
{
    auto mac = MacAddress::parse("52:54:00:AB:cd:0f");
    REQUIRE(mac.ok());
    CHECK(mac->to_string() == "52:54:00:ab:cd:0f");
    CHECK(mac->as_u64() == 0x525400abcd0full);
    CHECK_FALSE(mac->is_multicast());
    CHECK(MacAddress::parse("52-54-00-ab-cd-0f").value() == mac.value());
    CHECK(MacAddress::parse("ff:ff:ff:ff:ff:ff")->is_multicast());
    CHECK(MacAddress::parse("01:00:5e:00:00:01")->is_multicast());

    for (const char* bad : {"", "52:54:00:ab:cd", "52:54:00:ab:cd:0f:11", "52:54:00:ab:cd:0g", "52:54:00:ab:cd:f",
                            "5254.00ab.cd0f", "52:54:00:ab:cd:0f ", "52::54:00:ab:cd:0"})
        CHECK_MESSAGE(!MacAddress::parse(bad).ok(), bad);
    CHECK(mentions(MacAddress::parse("zz").error().message(), "not a MAC address"));
}

TEST_CASE("a MAC derived from the id is stable, unicast and locally administered")
{
    const MacAddress a = MacAddress::derived_from_id("a");
    CHECK(a == MacAddress::derived_from_id("a"));
    CHECK(a != MacAddress::derived_from_id("b"));
    CHECK_FALSE(a.is_multicast());
    CHECK((a.bytes()[0] & 2) != 0);  // locally administered
    CHECK(a.to_string().rfind("52:54:", 0) == 0);
}

TEST_CASE("socket addresses")
{
    auto v4 = SocketAddress::parse("127.0.0.1:7001");
    REQUIRE(v4.ok());
    CHECK(v4->to_string() == "127.0.0.1:7001");
    CHECK(v4->port() == 7001);
    auto v6 = SocketAddress::parse("[::1]:65535");
    REQUIRE(v6.ok());
    CHECK(v6->to_string() == "[::1]:65535");
    CHECK(v6->family() == SocketAddress::Family::ipv6);
    CHECK(SocketAddress::parse("0.0.0.0:1")->is_wildcard());

    for (const char* bad : {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:70000",
                            "127.0.0.1:-1", "127.0.0.1:1x", "localhost:7001", "256.0.0.1:7001", "[::1]", "[::1]7001",
                            "::1:7001", "[zz::1]:7001", ":7001"})
        CHECK_MESSAGE(!SocketAddress::parse(bad).ok(), bad);
    CHECK(mentions(SocketAddress::parse("127.0.0.1:0").error().message(), "out of range"));

    // The order that decides who dials: address first, then port.
    CHECK(SocketAddress::parse("127.0.0.1:9000").value() < SocketAddress::parse("127.0.0.2:1000").value());
    CHECK(SocketAddress::parse("127.0.0.1:1000").value() < SocketAddress::parse("127.0.0.1:9000").value());
}

TEST_CASE("a full --net peer spec")
{
    auto spec = parse_net_spec("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002;127.0.0.1:7003,mac=52:54:00:00:00:01");
    REQUIRE(spec.ok());
    CHECK(spec->id == "a");
    CHECK(spec->listen.to_string() == "127.0.0.1:7001");
    REQUIRE(spec->peers.size() == 2);
    CHECK(spec->peers[0].to_string() == "127.0.0.1:7002");
    CHECK(spec->peers[1].to_string() == "127.0.0.1:7003");
    CHECK(spec->mac.to_string() == "52:54:00:00:00:01");
    CHECK_FALSE(spec->mac_derived);
}

TEST_CASE("optional parts of the spec: keys in any order, no peers, derived MAC")
{
    auto spec = parse_net_spec("peer,listen=[::1]:7001,id=node-1.x_y");
    REQUIRE(spec.ok());
    CHECK(spec->peers.empty());
    CHECK(spec->mac_derived);
    CHECK(spec->mac == MacAddress::derived_from_id("node-1.x_y"));
}

TEST_CASE("every mistake in the spec is one clear error")
{
    CHECK(mentions(error_of("tap,id=a"), "unknown network backend 'tap'"));
    CHECK(mentions(error_of(""), "unknown network backend"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,color=red"), "unknown key 'color'"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers"), "'peers' is not key=value"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,"), "'' is not key=value"));
    CHECK(mentions(error_of("peer,id=a,id=b,listen=127.0.0.1:7001"), "'id' is given twice"));
    CHECK(mentions(error_of("peer,id=,listen=127.0.0.1:7001"), "'id' has an empty value"));
    CHECK(mentions(error_of("peer,listen=127.0.0.1:7001"), "missing id="));
    CHECK(mentions(error_of("peer,id=a"), "missing listen="));
    CHECK(mentions(error_of("peer,id=a b,listen=127.0.0.1:7001"), "may only contain"));
    CHECK(mentions(error_of("peer,id=" + std::string(65, 'x') + ",listen=127.0.0.1:7001"), "1..64 characters"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:99999"), "listen: port 99999"));
    CHECK(mentions(error_of("peer,id=a,listen=example.org:7001"), "listen: 'example.org:7001' is not an address"));
    CHECK(mentions(error_of("peer,id=a,listen=0.0.0.0:7001"), "is a wildcard"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002;127.0.0.1:7002"),
                   "peer 127.0.0.1:7002 is listed twice"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002;"), "empty entry"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002;127.0.0.1"), "peers: '127.0.0.1'"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers=0.0.0.0:7002"), "wildcard"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002;127.0.0.1:7001"),
                   "listen address 127.0.0.1:7001 is also listed in peers"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,mac=52:54:00:00:01"), "not a MAC address"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,mac=ff:ff:ff:ff:ff:ff"), "multicast"));
    CHECK(mentions(error_of("peer,id=a,listen=127.0.0.1:7001,mac=00:00:00:00:00:00"), "not a usable address"));
}

TEST_CASE("specs built without the parser are checked the same way")
{
    PeerNetSpec spec = parse_net_spec("peer,id=a,listen=127.0.0.1:7001,peers=127.0.0.1:7002").value();
    CHECK(validate_peer_net_spec(spec).ok());
    PeerNetSpec bad = spec;
    bad.peers.push_back(bad.peers[0]);
    CHECK(mentions(validate_peer_net_spec(bad).error().message(), "listed twice"));
    bad = spec;
    bad.id = "";
    CHECK_FALSE(validate_peer_net_spec(bad).ok());
    bad = spec;
    bad.mac = MacAddress();
    CHECK_FALSE(validate_peer_net_spec(bad).ok());
    bad = spec;
    bad.peers.push_back(spec.listen);
    CHECK(mentions(validate_peer_net_spec(bad).error().message(), "also listed in peers"));
    bad = spec;
    bad.listen = SocketAddress();
    CHECK_FALSE(validate_peer_net_spec(bad).ok());
}
