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
    return Hello{MacAddress::parse("52:54:00:00:00:01").value(), SocketAddress::parse("127.0.0.1:7001").value(),
                 std::move(id)};
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

// One HELLO and frames of sizes 0, 1, 13, 14, 60, 1514 and the maximum.
std::vector<uint8_t> sample_stream(std::vector<std::vector<uint8_t>>& frames)
{
    std::vector<uint8_t> stream;
    append_hello(stream, sample_hello());
    uint8_t seed = 1;
    for (size_t size : {size_t{0}, size_t{1}, size_t{13}, size_t{14}, size_t{60}, size_t{1514}, kMaxFrameSize}) {
        frames.push_back(frame_of(size, seed++));
        append_frame(stream, frames.back());
    }
    return stream;
}

void check_sample(const Decoded& d, const std::vector<std::vector<uint8_t>>& frames)
{
    REQUIRE_FALSE(d.error);
    REQUIRE(d.messages.size() == frames.size() + 1);
    CHECK(std::get<Hello>(d.messages[0]) == sample_hello());
    for (size_t i = 0; i < frames.size(); ++i) CHECK(std::get<FrameMessage>(d.messages[i + 1]).frame == frames[i]);
}

}  // namespace

TEST_CASE("the wire layout of HELLO and FRAME")
{
    std::vector<uint8_t> out;
    append_hello(out, sample_hello("ab"));
    REQUIRE(out.size() == kHeaderSize + kHelloFixedSize + 2);
    CHECK(le32(out, 0) == kHelloFixedSize + 2);
    CHECK(le16(out, 4) == 1);
    CHECK(le16(out, 6) == 0);
    CHECK(std::memcmp(out.data() + 8, "VVMN", 4) == 0);
    CHECK(le16(out, 12) == kProtocolVersion);
    CHECK(out[14] == 0x52);
    CHECK(le16(out, 20) == 7001);
    CHECK(out[22] == 4);
    CHECK(out[23] == 2);
    CHECK(out[24] == 127);
    CHECK(out[27] == 1);
    CHECK(std::memcmp(out.data() + 40, "ab", 2) == 0);

    out.clear();
    append_frame(out, frame_of(20, 3));
    CHECK(out.size() == encoded_frame_size(20));
    CHECK(le32(out, 0) == 20);
    CHECK(le16(out, 4) == 2);
}

TEST_CASE("many messages in one buffer")
{
    std::vector<std::vector<uint8_t>> frames;
    const auto stream = sample_stream(frames);
    MessageDecoder d;
    d.feed(stream);
    check_sample(drain(d), frames);
    CHECK(d.buffered_bytes() == 0);
}

TEST_CASE("a stream split at every byte boundary decodes the same")
{
    std::vector<std::vector<uint8_t>> frames;
    std::vector<uint8_t> stream;
    append_hello(stream, sample_hello());
    for (size_t size : {size_t{0}, size_t{14}, size_t{61}}) {
        frames.push_back(frame_of(size, static_cast<uint8_t>(size)));
        append_frame(stream, frames.back());
    }
    for (size_t cut = 0; cut <= stream.size(); ++cut) {
        MessageDecoder d;
        d.feed(std::span(stream).first(cut));
        Decoded first = drain(d);
        d.feed(std::span(stream).subspan(cut));
        Decoded rest = drain(d);
        REQUIRE_FALSE(first.error);
        for (auto& m : rest.messages) first.messages.push_back(std::move(m));
        first.error = rest.error;
        check_sample(first, frames);
    }
}

TEST_CASE("a stream fed one byte at a time")
{
    std::vector<std::vector<uint8_t>> frames;
    const auto stream = sample_stream(frames);
    MessageDecoder d;
    Decoded all;
    for (uint8_t byte : stream) {
        d.feed(std::span(&byte, 1));
        Decoded got = drain(d);
        REQUIRE_FALSE(got.error);
        for (auto& m : got.messages) all.messages.push_back(std::move(m));
        CHECK(d.buffered_bytes() <= kMaxMessageSize);
    }
    check_sample(all, frames);
}

TEST_CASE("an oversize FRAME is refused from its header alone")
{
    MessageDecoder d;
    d.feed(header(kMaxFrameSize + 1, 2));
    auto r = d.next();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("65536 bytes exceeds the maximum of 65535") != std::string::npos);
    // The error is sticky: the rest of this stream means nothing.
    std::vector<uint8_t> good;
    append_frame(good, frame_of(20, 0));
    d.feed(good);
    CHECK_FALSE(d.next().ok());
}

TEST_CASE("an oversize HELLO is refused")
{
    MessageDecoder d;
    d.feed(header(kMaxHelloPayload + 1, 1));
    CHECK_FALSE(d.next().ok());
    MessageDecoder e;
    e.feed(header(0xffffffffu, 1));
    CHECK_FALSE(e.next().ok());
}

TEST_CASE("unknown and reserved types, and unknown flags, are protocol errors")
{
    for (uint16_t type : {uint16_t{0}, uint16_t{4}, uint16_t{15}, uint16_t{21}, uint16_t{0xffff}}) {
        MessageDecoder d;
        d.feed(header(0, type));
        auto r = d.next();
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message() == "unknown message type " + std::to_string(type));
    }
    for (uint16_t type : {uint16_t{3}, uint16_t{16}, uint16_t{17}, uint16_t{18}, uint16_t{19}, uint16_t{20}}) {
        MessageDecoder d;
        d.feed(header(4, type));
        auto r = d.next();
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().message().find("not supported by protocol version 1") != std::string::npos);
    }
    CHECK(message_type_name(3) == "MARKER");
    CHECK(message_type_name(20) == "RESTORED");
    MessageDecoder d;
    d.feed(header(0, 2, 0x8000));
    auto r = d.next();
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message().find("flags 0x8000") != std::string::npos);
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

    auto decode = [](std::vector<uint8_t> p) {
        std::vector<uint8_t> stream = header(static_cast<uint32_t>(p.size()), 1);
        stream.insert(stream.end(), p.begin(), p.end());
        MessageDecoder d;
        d.feed(stream);
        auto r = d.next();
        return r.ok() ? std::string() : r.error().message();
    };
    CHECK(decode(payload).empty());

    SUBCASE("truncated at every length")
    {
        for (size_t n = 0; n < payload.size(); ++n) {
            const std::string e = decode(std::vector<uint8_t>(payload.begin(), payload.begin() + n));
            CHECK_MESSAGE(!e.empty(), n);
        }
        CHECK(decode(std::vector<uint8_t>(payload.begin(), payload.begin() + 3)).find("truncated") != std::string::npos);
    }
    SUBCASE("trailing bytes")
    {
        auto p = payload;
        p.push_back('x');
        CHECK(decode(p).find("id length says") != std::string::npos);
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
        store_le<uint16_t>(p.data() + 4, 2);
        p.resize(1000, 0xee);
        CHECK(decode(p) == "peer speaks protocol version 2, this VMM speaks version 1");
    }
    SUBCASE("bad fields")
    {
        auto p = payload;
        p[14] = 5;
        CHECK(decode(p).find("address family 5") != std::string::npos);
        p = payload;
        p[25] = 1;  // IPv4 padding
        CHECK(decode(p).find("non-zero padding") != std::string::npos);
        p = payload;
        p[12] = p[13] = 0;
        CHECK(decode(p).find("port 0") != std::string::npos);
        p = payload;
        p[32] = ' ';
        CHECK(decode(p).find("may only contain") != std::string::npos);
        p = payload;
        p[6] = 0x01;  // multicast guest MAC
        CHECK(decode(p).find("not a unicast address") != std::string::npos);
        p.assign(payload.begin(), payload.begin() + kHelloFixedSize);
        p[15] = 0;
        CHECK(decode(p).find("1..64 characters") != std::string::npos);
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
