#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "net/peer_protocol.hpp"
#include "vmm/base/le.hpp"

using namespace vvmm;
using namespace vvmm::net;

namespace {

Hello sample_hello(std::string id = "node-a")
{
    return Hello{.role = PeerRole::peer,
                 .mac = MacAddress::parse("52:54:00:00:00:01").value(),
                 .listen = SocketAddress::parse("127.0.0.1:7001").value(),
                 .id = std::move(id),
                 .cluster = "lab-1",
                 .target = SocketAddress::parse("127.0.0.2:7002").value(),
                 .target_id = "node-b"};
}

Hello controller_hello()
{
    return Hello{.role = PeerRole::controller,
                 .id = "cli.42",
                 .cluster = "lab-1",
                 .target = SocketAddress::parse("127.0.0.2:7002").value(),
                 .target_id = "node-b"};
}

std::vector<uint8_t> message(uint16_t type, std::span<const uint8_t> payload)
{
    // Sized once and copied into (GCC 12 warns falsely about insert() here).
    std::vector<uint8_t> m(kHeaderSize + payload.size());
    store_le<uint32_t>(m.data(), static_cast<uint32_t>(payload.size()));
    store_le<uint16_t>(m.data() + 4, type);
    if (!payload.empty()) std::memcpy(m.data() + kHeaderSize, payload.data(), payload.size());
    return m;
}

std::vector<uint8_t> epoch_and(uint64_t epoch, std::string_view json)
{
    std::vector<uint8_t> p(8 + json.size());
    store_le<uint64_t>(p.data(), epoch);
    if (!json.empty()) std::memcpy(p.data() + 8, json.data(), json.size());
    return p;
}

std::vector<uint8_t> text(std::string_view s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// The error of decoding `stream`'s first message, "" if it decoded.
std::string first_error(const std::vector<uint8_t>& stream)
{
    MessageDecoder d;
    d.feed(stream);
    auto r = d.next();
    if (r.ok()) {
        REQUIRE(r.value().has_value());
        return "";
    }
    CHECK_FALSE(d.next().ok());  // sticky
    return r.error().message();
}

bool contains(const std::string& haystack, std::string_view needle)
{
    return haystack.find(needle) != std::string::npos;
}

std::vector<uint8_t> frame_of(size_t size, uint8_t seed)
{
    std::vector<uint8_t> f(size);
    for (size_t i = 0; i < size; ++i) f[i] = static_cast<uint8_t>(seed + i * 7);
    return f;
}

std::vector<uint8_t> header(uint32_t length, uint16_t type, uint16_t flags = 0)
{
    std::vector<uint8_t> h(kHeaderSize);
    store_le<uint32_t>(h.data(), length);
    store_le<uint16_t>(h.data() + 4, type);
    store_le<uint16_t>(h.data() + 6, flags);
    return h;
}

// Decodes everything it can; stops at the first error.
struct Decoded {
    std::vector<Message> messages;
    std::optional<std::string> error;
};

Decoded drain(MessageDecoder& d)
{
    Decoded out;
    for (;;) {
        auto next = d.next();
        if (!next.ok()) {
            out.error = next.error().message();
            return out;
        }
        if (!next.value()) return out;
        out.messages.push_back(std::move(*next.value()));
    }
}

// One message of every kind: HELLO, MARKER, every control message,
// CTL_REQUEST/REPLY, then frames of sizes 0, 1, 13, 14, 60, 1514 and the
// maximum.
std::vector<Message> sample_messages()
{
    std::vector<Message> m;
    m.push_back(sample_hello());
    m.push_back(controller_hello());
    Hello untargeted = sample_hello("x");
    untargeted.target = SocketAddress();
    untargeted.target_id = "";
    m.push_back(untargeted);
    m.push_back(MarkerMessage{1});
    m.push_back(MarkerMessage{0xfedcba9876543210ull});
    m.push_back(ControlMessage{MessageType::prepare, 7, {{"mode", "full"}, {"initiator", "a"}}});
    m.push_back(ControlMessage{MessageType::done, 7, {{"digest", "00ff"}, {"bytes", 12345}, {"ok", true}}});
    m.push_back(ControlMessage{MessageType::commit, 7, nlohmann::json::object()});
    m.push_back(ControlMessage{MessageType::abort, 8, {{"reason", "peer b timed out"}, {"why", {1, 2.5, nullptr}}}});
    m.push_back(ControlMessage{MessageType::restored, 0xffffffffffffffffull, {{"\u00e9t\u00e9", "\u2603"}}});
    m.push_back(ControlRequest{{{"command", "checkpoint"}, {"all", true}}});
    m.push_back(ControlReply{{{"epoch", 7}, {"vms", {"a", "b"}}}});
    m.push_back(ControlMessage{MessageType::parity_end, 9, {{"set", 1}, {"member", 0}}});
    m.push_back(ParityMessage{9, 1, 2, 8192, frame_of(4096, 77)});
    m.push_back(ParityMessage{9, 1, 2, 0, {}});
    uint8_t seed = 1;
    for (size_t size : {size_t{0}, size_t{1}, size_t{13}, size_t{14}, size_t{60}, size_t{1514}, kMaxFrameSize})
        m.push_back(FrameMessage{frame_of(size, seed++)});
    return m;
}

void append_message(std::vector<uint8_t>& out, const Message& m)
{
    if (const auto* h = std::get_if<Hello>(&m)) append_hello(out, *h);
    if (const auto* f = std::get_if<FrameMessage>(&m)) append_frame(out, f->frame);
    if (const auto* k = std::get_if<MarkerMessage>(&m)) append_marker(out, k->epoch);
    if (const auto* c = std::get_if<ControlMessage>(&m)) append_control(out, c->type, c->epoch, c->body);
    if (const auto* q = std::get_if<ControlRequest>(&m)) append_ctl_request(out, q->body);
    if (const auto* r = std::get_if<ControlReply>(&m)) append_ctl_reply(out, r->body);
    if (const auto* p = std::get_if<ParityMessage>(&m)) append_parity(out, p->epoch, p->set, p->member, p->offset, p->data);
}

std::vector<uint8_t> sample_stream()
{
    std::vector<uint8_t> stream;
    for (const Message& m : sample_messages()) append_message(stream, m);
    return stream;
}

void check_sample(const Decoded& d)
{
    REQUIRE_FALSE(d.error);
    const auto expected = sample_messages();
    REQUIRE(d.messages.size() == expected.size());
    for (size_t i = 0; i < expected.size(); ++i) CHECK_MESSAGE(d.messages[i] == expected[i], i);
}

}  // namespace

TEST_CASE("the wire layout of HELLO and FRAME")
{
    std::vector<uint8_t> out;
    append_hello(out, sample_hello("ab"));
    REQUIRE(out.size() == kHeaderSize + kHelloFixedSize + 2 + 5 + 6);
    CHECK(kHelloFixedSize == 68);
    CHECK(le32(out, 0) == kHelloFixedSize + 2 + 5 + 6);
    CHECK(le16(out, 4) == 1);
    CHECK(le16(out, 6) == 0);
    const uint8_t* p = out.data() + kHeaderSize;
    CHECK(std::memcmp(p, "VVMN", 4) == 0);
    CHECK(load_le<uint16_t>(p + 4) == 4);
    CHECK(kProtocolVersion == 4);
    CHECK(p[6] == 1);  // role: peer
    CHECK(p[7] == 0);
    CHECK(p[8] == 0x52);
    CHECK(p[13] == 0x01);
    CHECK(load_le<uint16_t>(p + 14) == 7001);
    CHECK(p[16] == 4);
    CHECK(p[17] == 2);
    CHECK(p[18] == 5);
    CHECK(p[19] == 6);
    CHECK(p[20] == 127);
    CHECK(p[23] == 1);
    CHECK(load_le<uint16_t>(p + 36) == 7002);
    CHECK(p[38] == 4);
    CHECK(p[39] == 0);
    CHECK(p[40] == 127);
    CHECK(p[43] == 2);
    for (size_t i = 44; i < 68; ++i) CHECK_MESSAGE(p[i] == 0, i);
    CHECK(std::memcmp(p + 68, "ab", 2) == 0);
    CHECK(std::memcmp(p + 70, "lab-1", 5) == 0);
    CHECK(std::memcmp(p + 75, "node-b", 6) == 0);

    out.clear();
    append_frame(out, frame_of(20, 3));
    CHECK(out.size() == encoded_frame_size(20));
    CHECK(le32(out, 0) == 20);
    CHECK(le16(out, 4) == 2);
}

TEST_CASE("the wire layout of a controller's HELLO")
{
    std::vector<uint8_t> out;
    Hello h = controller_hello();
    // What a controller has no use for is not sent, whatever the struct holds.
    h.mac = MacAddress::parse("52:54:00:00:00:01").value();
    h.listen = SocketAddress::parse("127.0.0.1:7001").value();
    append_hello(out, h);
    const uint8_t* p = out.data() + kHeaderSize;
    CHECK(p[6] == 2);
    for (size_t i = 8; i < 36; ++i)
        if (i < 17 || i > 19) CHECK_MESSAGE(p[i] == 0, i);
    MessageDecoder d;
    d.feed(out);
    auto r = d.next();
    REQUIRE(r.ok());
    CHECK(std::get<Hello>(*r.value()) == controller_hello());
}

TEST_CASE("the wire layout of MARKER and the JSON messages")
{
    std::vector<uint8_t> out;
    append_marker(out, 0x0102030405060708ull);
    CHECK(out.size() == kHeaderSize + 8);
    CHECK(le16(out, 4) == 3);
    CHECK(out[8] == 0x08);
    CHECK(out[15] == 0x01);

    const std::pair<MessageType, uint16_t> types[] = {{MessageType::prepare, 16}, {MessageType::done, 17},
                                                      {MessageType::commit, 18},  {MessageType::abort, 19},
                                                      {MessageType::restored, 20}};
    for (auto [type, number] : types) {
        out.clear();
        append_control(out, type, 9, {{"k", 1}});
        CHECK(le16(out, 4) == number);
        CHECK(le32(out, 0) == 8 + 7);
        CHECK(le64(out, 8) == 9);
        CHECK(std::string(out.begin() + 16, out.end()) == R"({"k":1})");
        CHECK(is_control_type(type));
    }
    CHECK_FALSE(is_control_type(MessageType::marker));
    CHECK_FALSE(is_control_type(MessageType::ctl_request));

    out.clear();
    append_ctl_request(out, {{"a", "b"}});
    CHECK(le16(out, 4) == 21);
    CHECK(std::string(out.begin() + 8, out.end()) == R"({"a":"b"})");
    out.clear();
    append_ctl_reply(out, nlohmann::json::object());
    CHECK(le16(out, 4) == 22);
    CHECK(std::string(out.begin() + 8, out.end()) == "{}");
}

TEST_CASE("the wire layout of PARITY, and its limits")
{
    std::vector<uint8_t> out;
    const std::vector<uint8_t> data = {1, 2, 3};
    append_parity(out, 7, 0x01020304, 0x0506, 0x1122334455ull, data);
    REQUIRE(out.size() == kHeaderSize + 24 + 3);
    CHECK(le16(out, 4) == 23);
    CHECK(le32(out, 0) == 27);
    CHECK(le64(out, 8) == 7);
    CHECK(le32(out, 16) == 0x01020304);
    CHECK(le16(out, 20) == 0x0506);
    CHECK(le16(out, 22) == 0);
    CHECK(le64(out, 24) == 0x1122334455ull);
    CHECK(out[32] == 1);
    MessageDecoder d;
    d.feed(out);
    auto m = d.next();
    REQUIRE(m.ok());
    REQUIRE(m.value());
    CHECK(*m.value() == Message(ParityMessage{7, 0x01020304, 0x0506, 0x1122334455ull, data}));

    auto with = [](uint64_t epoch, uint16_t reserved, uint64_t offset, size_t bytes) {
        std::vector<uint8_t> p(24 + bytes);
        store_le<uint64_t>(p.data(), epoch);
        store_le<uint16_t>(p.data() + 14, reserved);
        store_le<uint64_t>(p.data() + 16, offset);
        return message(23, p);
    };
    CHECK(first_error(with(1, 0, 0, kMaxParityData)) == "");
    CHECK(contains(first_error(with(1, 0, 0, kMaxParityData + 1)), "exceeds the maximum"));
    CHECK(contains(first_error(with(0, 0, 0, 8)), "PARITY has epoch 0"));
    CHECK(contains(first_error(with(1, 1, 0, 8)), "non-zero reserved"));
    CHECK(contains(first_error(with(1, 0, kMaxParityOffset - 4, 8)), "reaches past byte"));
    CHECK(contains(first_error(message(23, std::vector<uint8_t>(23))), "shorter than the 24"));
    CHECK(is_control_type(MessageType::parity_end));
    CHECK(is_control_type(MessageType::parity_begin));
    CHECK_FALSE(is_control_type(MessageType::parity));
}

TEST_CASE("message names")
{
    CHECK(message_type_name(1) == "HELLO");
    CHECK(message_type_name(3) == "MARKER");
    CHECK(message_type_name(4) == "unknown");  // version 2's AUTH
    CHECK(message_type_name(20) == "RESTORED");
    CHECK(message_type_name(21) == "CTL_REQUEST");
    CHECK(message_type_name(22) == "CTL_REPLY");
    CHECK(message_type_name(23) == "PARITY");
    CHECK(message_type_name(25) == "PARITY_BEGIN");
    CHECK(message_type_name(26) == "unknown");
    CHECK(message_name(Message(ParityMessage{1, 0, 0, 0, {}})) == "PARITY");
    CHECK(message_name(Message(ControlMessage{MessageType::abort, 1, {}})) == "ABORT");
    CHECK(message_name(Message(MarkerMessage{1})) == "MARKER");
}

TEST_CASE("every message round-trips, all in one buffer")
{
    MessageDecoder d;
    d.feed(sample_stream());
    check_sample(drain(d));
    CHECK(d.buffered_bytes() == 0);
}

TEST_CASE("a stream split at every byte boundary decodes the same")
{
    // The sample without its largest frame, to keep this quick.
    std::vector<uint8_t> stream;
    auto expected = sample_messages();
    expected.pop_back();
    for (const Message& m : expected) append_message(stream, m);
    for (size_t cut = 0; cut <= stream.size(); ++cut) {
        MessageDecoder d;
        d.feed(std::span(stream).first(cut));
        Decoded first = drain(d);
        d.feed(std::span(stream).subspan(cut));
        Decoded rest = drain(d);
        REQUIRE_FALSE(first.error);
        REQUIRE_FALSE(rest.error);
        for (auto& m : rest.messages) first.messages.push_back(std::move(m));
        REQUIRE(first.messages.size() == expected.size());
        for (size_t i = 0; i < expected.size(); ++i) CHECK(first.messages[i] == expected[i]);
    }
}

TEST_CASE("a stream fed one byte at a time")
{
    const auto stream = sample_stream();
    MessageDecoder d;
    Decoded all;
    for (uint8_t byte : stream) {
        d.feed(std::span(&byte, 1));
        Decoded got = drain(d);
        REQUIRE_FALSE(got.error);
        for (auto& m : got.messages) all.messages.push_back(std::move(m));
        CHECK(d.buffered_bytes() <= kMaxMessageSize);
    }
    check_sample(all);
}

TEST_CASE("an oversize FRAME is refused from its header alone")
{
    MessageDecoder d;
    d.feed(header(kMaxFrameSize + 1, 2));
    auto r = d.next();
    REQUIRE_FALSE(r.ok());
    CHECK(contains(r.error().message(), "65536 bytes exceeds the maximum of 65535"));
    // The error is sticky: the rest of this stream means nothing.
    std::vector<uint8_t> good;
    append_frame(good, frame_of(20, 0));
    d.feed(good);
    CHECK_FALSE(d.next().ok());
}

TEST_CASE("payload sizes are checked from the header alone")
{
    // Each of these headers is refused before any payload byte arrives.
    CHECK(contains(first_error(header(kMaxHelloPayload + 1, 1)), "exceeds the maximum"));
    CHECK(contains(first_error(header(0xffffffffu, 1)), "exceeds the maximum"));
    CHECK(first_error(header(32, 4)) == "unknown message type 4");
    CHECK(first_error(header(7, 3)) == "MARKER payload of 7 bytes is shorter than the 8 it needs");
    CHECK(first_error(header(9, 3)) == "MARKER payload of 9 bytes exceeds the maximum of 8");
    for (uint16_t type = 16; type <= 20; ++type) {
        CHECK(contains(first_error(header(7, type)), "shorter than the 8 it needs"));
        CHECK(contains(first_error(header(8 + kMaxJsonSize + 1, type)), "exceeds the maximum"));
    }
    CHECK(contains(first_error(header(kMaxJsonSize + 1, 21)), "exceeds the maximum"));
    CHECK(contains(first_error(header(kMaxJsonSize + 1, 22)), "exceeds the maximum"));
    // ...while a header within bounds waits for its payload.
    for (auto [length, type] : {std::pair{64u, 1}, {8u, 3}, {8u + kMaxJsonSize, 16}, {kMaxJsonSize, 21}}) {
        MessageDecoder d;
        d.feed(header(static_cast<uint32_t>(length), static_cast<uint16_t>(type)));
        auto r = d.next();
        REQUIRE(r.ok());
        CHECK_FALSE(r.value().has_value());
    }
}

TEST_CASE("JSON bodies of the maximum size are accepted")
{
    nlohmann::json body = {{"pad", ""}};
    const size_t overhead = std::string(R"({"pad":""})").size();
    body["pad"] = std::string(kMaxJsonSize - overhead, 'x');
    std::vector<uint8_t> out;
    append_control(out, MessageType::done, 3, body);
    CHECK(out.size() == kHeaderSize + 8 + kMaxJsonSize);
    append_ctl_reply(out, body);
    MessageDecoder d;
    d.feed(out);
    Decoded got = drain(d);
    REQUIRE_FALSE(got.error);
    REQUIRE(got.messages.size() == 2);
    CHECK(std::get<ControlMessage>(got.messages[0]).body == body);
    CHECK(std::get<ControlReply>(got.messages[1]).body == body);
    CHECK(out.size() <= 2 * kMaxMessageSize);
}

TEST_CASE("unknown types and unknown flags are protocol errors")
{
    for (uint16_t type : {uint16_t{0}, uint16_t{4}, uint16_t{5}, uint16_t{15}, uint16_t{26}, uint16_t{0xffff}})
        CHECK(first_error(header(0, type)) == "unknown message type " + std::to_string(type));
    CHECK(contains(first_error(header(0, 2, 0x8000)), "flags 0x8000"));
    CHECK(contains(first_error(header(8, 3, 1)), "MARKER has flags 0x0001"));
}

TEST_CASE("a partial header or payload waits for more bytes")
{
    std::vector<uint8_t> one;
    append_frame(one, frame_of(100, 9));
    MessageDecoder d;
    d.feed(std::span(one).first(7));
    CHECK_FALSE(d.next().value().has_value());
    d.feed(std::span(one).subspan(7, 50));
    CHECK_FALSE(d.next().value().has_value());
    d.feed(std::span(one).subspan(57));
    auto r = d.next();
    REQUIRE(r.value().has_value());
    CHECK(std::get<FrameMessage>(*r.value()).frame == frame_of(100, 9));
}

TEST_CASE("bad HELLOs are protocol errors")
{
    std::vector<uint8_t> good;
    append_hello(good, sample_hello("abc"));
    const std::vector<uint8_t> payload(good.begin() + kHeaderSize, good.end());
    const size_t id_at = kHelloFixedSize;
    const size_t cluster_at = kHelloFixedSize + 3;

    auto decode = [](std::vector<uint8_t> p) { return first_error(message(1, p)); };
    CHECK(decode(payload).empty());

    SUBCASE("truncated at every length")
    {
        for (size_t n = 0; n < payload.size(); ++n) {
            const std::string e = decode(std::vector<uint8_t>(payload.begin(), payload.begin() + n));
            CHECK_MESSAGE(!e.empty(), n);
        }
        CHECK(contains(decode(std::vector<uint8_t>(payload.begin(), payload.begin() + 3)), "truncated"));
        CHECK(contains(decode(std::vector<uint8_t>(payload.begin(), payload.begin() + 40)), "truncated (40 bytes)"));
    }
    SUBCASE("trailing bytes")
    {
        auto p = payload;
        p.push_back('x');
        CHECK(contains(decode(p), "name lengths say"));
    }
    SUBCASE("bad magic")
    {
        auto p = payload;
        p[0] = 'X';
        CHECK(decode(p) == "HELLO has a bad magic number");
    }
    SUBCASE("another version, even with a layout we do not know")
    {
        std::vector<uint8_t> p(payload.begin(), payload.begin() + 6);
        store_le<uint16_t>(p.data() + 4, 5);
        p.resize(1000, 0xee);
        CHECK(decode(p) == "peer speaks protocol version 5, this VMM speaks version 4");
        store_le<uint16_t>(p.data() + 4, 3);  // version 3: no parity messages
        CHECK(decode(p) == "peer speaks protocol version 3, this VMM speaks version 4");
        store_le<uint16_t>(p.data() + 4, 2);  // version 2: HELLO + AUTH over plain TCP
        CHECK(decode(p) == "peer speaks protocol version 2, this VMM speaks version 4");
        store_le<uint16_t>(p.data() + 4, 0);
        p.resize(6);
        CHECK(decode(p) == "peer speaks protocol version 0, this VMM speaks version 4");
    }
    SUBCASE("a version 1 HELLO (32-byte layout) is refused for its version")
    {
        // Exactly what a version 1 VMM sends: magic, version 1, MAC, port,
        // family, id length, address, id.
        std::vector<uint8_t> p(32, 0);
        std::memcpy(p.data(), "VVMN", 4);
        store_le<uint16_t>(p.data() + 4, 1);
        const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
        std::memcpy(p.data() + 6, mac, 6);
        store_le<uint16_t>(p.data() + 12, 7001);
        p[14] = 4;
        p[15] = 6;
        p[16] = 127;
        p[19] = 1;
        for (char c : std::string("node-a")) p.push_back(static_cast<uint8_t>(c));
        CHECK(decode(p) == "peer speaks protocol version 1, this VMM speaks version 4");
    }
    SUBCASE("reserved bytes and role")
    {
        auto p = payload;
        p[7] = 1;
        CHECK(decode(p) == "HELLO has non-zero reserved bytes");
        for (size_t at : {size_t{39}, size_t{56}, size_t{67}}) {
            p = payload;
            p[at] = 0x80;
            CHECK_MESSAGE(decode(p) == "HELLO has non-zero reserved bytes", at);
        }
        for (uint8_t role : {uint8_t{0}, uint8_t{3}, uint8_t{0xff}}) {
            p = payload;
            p[6] = role;
            CHECK(decode(p) == "HELLO has unknown role " + std::to_string(role));
        }
    }
    SUBCASE("bad fields of a peer")
    {
        auto p = payload;
        p[16] = 5;
        CHECK(contains(decode(p), "address family 5"));
        p[16] = 0;
        CHECK(contains(decode(p), "address family 0"));
        p = payload;
        p[25] = 1;  // IPv4 padding
        CHECK(contains(decode(p), "non-zero padding"));
        p = payload;
        p[14] = p[15] = 0;
        CHECK(contains(decode(p), "port 0"));
        p = payload;
        p[8] = 0x01;  // multicast guest MAC
        CHECK(contains(decode(p), "not a unicast address"));
        p = payload;
        std::fill(p.begin() + 8, p.begin() + 14, 0);
        CHECK(contains(decode(p), "not a unicast address"));
    }
    SUBCASE("bad target")
    {
        auto p = payload;
        p[38] = 5;
        CHECK(contains(decode(p), "target address family 5"));
        p = payload;
        p[38] = 0;  // no family, but a port and an address
        CHECK(contains(decode(p), "target address without a family"));
        p = payload;
        p[36] = p[37] = 0;
        CHECK(contains(decode(p), "target address port 0"));
        p = payload;
        p[45] = 1;  // IPv4 padding
        CHECK(contains(decode(p), "non-zero padding"));
        p = payload;
        p[p.size() - 1] = '/';
        CHECK(contains(decode(p), "HELLO: target id 'node-/'"));
    }
    SUBCASE("bad id and cluster name")
    {
        for (char bad : {' ', '/', ':', '\0', '\xc3', '\n'}) {
            auto p = payload;
            p[id_at + 1] = static_cast<uint8_t>(bad);
            CHECK(contains(decode(p), "may only contain"));
            p = payload;
            p[cluster_at + 2] = static_cast<uint8_t>(bad);
            CHECK(contains(decode(p), "cluster name"));
        }
        // A name from the wire is escaped in the error (it ends up in a log).
        auto p = payload;
        p[id_at + 1] = '\n';
        CHECK(decode(p) == "HELLO: id 'a\\x0ac' may only contain letters, digits, '.', '_' and '-'");
        p = payload;
        p[cluster_at] = '\'';
        p[cluster_at + 1] = 0xff;
        CHECK(decode(p) == "HELLO: cluster name '\\x27\\xffb-1' may only contain letters, digits, '.', '_' and '-'");
        CHECK(validate_cluster_name("lab-1.x_y").ok());
        CHECK_FALSE(validate_cluster_name("").ok());
        CHECK_FALSE(validate_cluster_name("a b").ok());
        CHECK_FALSE(validate_cluster_name(std::string(65, 'a')).ok());
        // Empty id or cluster name.
        p = payload;
        p[17] = 0;
        p.erase(p.begin() + id_at, p.begin() + id_at + 3);
        CHECK(contains(decode(p), "1..64 characters"));
        p = payload;
        p[18] = 0;
        p.erase(p.begin() + cluster_at, p.begin() + cluster_at + 5);
        CHECK(contains(decode(p), "cluster name '' must be 1..64 characters"));
        // 64 is the limit for both.
        Hello h = sample_hello(std::string(64, 'i'));
        h.cluster = std::string(64, 'c');
        std::vector<uint8_t> ok;
        append_hello(ok, h);
        CHECK(first_error(ok).empty());
        h.cluster = std::string(65, 'c');
        std::vector<uint8_t> too_long;
        append_hello(too_long, h);
        CHECK(contains(first_error(too_long), "cluster name"));
        h.cluster = "c";
        h.id = std::string(65, 'i');
        too_long.clear();
        append_hello(too_long, h);
        CHECK(contains(first_error(too_long), "1..64 characters"));
    }
    SUBCASE("a controller has neither MAC nor listen address")
    {
        std::vector<uint8_t> c;
        append_hello(c, controller_hello());
        std::vector<uint8_t> cp(c.begin() + kHeaderSize, c.end());
        CHECK(decode(cp).empty());
        for (size_t at : {size_t{8}, size_t{13}, size_t{14}, size_t{15}, size_t{16}, size_t{20}, size_t{35}}) {
            auto p = cp;
            p[at] = 4;
            CHECK_MESSAGE(decode(p) == "HELLO of a controller has a guest MAC or a listen address", at);
        }
    }
}

TEST_CASE("IPv6 listen addresses survive HELLO")
{
    Hello h = sample_hello();
    h.listen = SocketAddress::parse("[2001:db8::7]:9").value();
    std::vector<uint8_t> out;
    append_hello(out, h);
    MessageDecoder d;
    d.feed(out);
    auto r = d.next();
    REQUIRE(r.ok());
    CHECK(std::get<Hello>(*r.value()) == h);
}

TEST_CASE("epoch 0 is refused")
{
    CHECK(first_error(message(3, epoch_and(0, ""))) == "MARKER has epoch 0");
    for (uint16_t type = 16; type <= 20; ++type)
        CHECK(first_error(message(type, epoch_and(0, "{}"))) ==
              std::string(message_type_name(type)) + " has epoch 0");
    CHECK(first_error(message(3, epoch_and(1, ""))).empty());
}

TEST_CASE("JSON bodies must be one well-formed object")
{
    const std::string_view bad_bodies[] = {
        "",
        " ",
        "[]",
        "[1,2]",
        "\"text\"",
        "42",
        "null",
        "true",
        "{",
        "{\"a\":}",
        "{\"a\":1,}",
        "{} {}",
        "{}x",
        "{'a':1}",
        "{\"a\":1e999}",      // a number no double holds
        "{\"a\":[-1e400]}",
        "{\"a\":\"\xff\"}",   // not UTF-8
        "{\"a\":\"\xc3\"}",   // truncated UTF-8
        "{/*c*/}",
        std::string_view("{}\0", 3),
        std::string_view("{\"a\":1}\0{", 9),
    };
    for (std::string_view body : bad_bodies) {
        for (uint16_t type : {uint16_t{16}, uint16_t{17}, uint16_t{18}, uint16_t{19}, uint16_t{20}}) {
            const std::string e = first_error(message(type, epoch_and(5, body)));
            CHECK_MESSAGE(contains(e, std::string(message_type_name(type)) + " body "), body, " -> ", e);
        }
        for (uint16_t type : {uint16_t{21}, uint16_t{22}}) {
            const std::string e = first_error(message(type, text(body)));
            CHECK_MESSAGE(contains(e, std::string(message_type_name(type)) + " body "), body, " -> ", e);
        }
    }
    CHECK(first_error(message(21, text("[1]"))) == "CTL_REQUEST body is a JSON array, not an object");
    CHECK(contains(first_error(message(22, text("{"))),
                   "CTL_REPLY body is not valid JSON: parse error at line 1, column 2"));
    // Whitespace around the object is fine, and so is a large finite number.
    CHECK(first_error(message(21, text(" \n{\"a\": 1e300}\t"))).empty());
}

TEST_CASE("JSON nesting is bounded")
{
    auto nested = [](size_t depth) {
        std::string s = "{\"a\":";
        for (size_t i = 1; i < depth; ++i) s += "[";
        s += "1";
        for (size_t i = 1; i < depth; ++i) s += "]";
        return s + "}";
    };
    CHECK(first_error(message(21, text(nested(kMaxJsonDepth)))).empty());
    CHECK(first_error(message(21, text(nested(kMaxJsonDepth + 1)))) ==
          "CTL_REQUEST body nests deeper than 32 levels");
    // Brackets inside strings (with escaped quotes) do not count.
    std::string in_string = "{\"a\":\"\\\"" + std::string(100, '[') + "\"}";
    CHECK(first_error(message(21, text(in_string))).empty());
    // A 60 KiB stack of brackets is refused before the parser sees it.
    std::string deep(kMaxJsonSize / 2, '[');
    deep += std::string(kMaxJsonSize / 2, ']');
    CHECK(contains(first_error(message(22, text(deep))), "nests deeper"));
}

TEST_CASE("a control message of another type than encoded is decoded as sent")
{
    // The encoder writes what it is given; the decoder sorts control types
    // and CTL messages apart by the type field alone.
    std::vector<uint8_t> out;
    append_control(out, MessageType::commit, 12, {{"x", 1}});
    MessageDecoder d;
    d.feed(out);
    auto r = d.next();
    REQUIRE(r.ok());
    const auto& c = std::get<ControlMessage>(*r.value());
    CHECK(c.type == MessageType::commit);
    CHECK(c.epoch == 12);
    CHECK(c.body == nlohmann::json{{"x", 1}});
}

TEST_CASE("before HELLO, any other message is refused from its header")
{
    std::vector<uint8_t> frame;
    append_frame(frame, frame_of(60, 1));
    MessageDecoder d;
    d.accept_only_hello(true);
    d.feed(std::span(frame).first(kHeaderSize));  // the payload never needs to arrive
    auto r = d.next();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message() == "a FRAME came before HELLO");

    MessageDecoder h;
    h.accept_only_hello(true);
    std::vector<uint8_t> stream;
    append_hello(stream, sample_hello());
    append_frame(stream, frame_of(60, 1));
    h.feed(stream);
    REQUIRE(h.next().ok());
    h.accept_only_hello(false);  // HELLO accepted
    auto f = h.next();
    REQUIRE(f.ok());
    CHECK(std::holds_alternative<FrameMessage>(*f.value()));
}
