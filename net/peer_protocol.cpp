#include "net/peer_protocol.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "vmm/base/le.hpp"

namespace vvmm::net {
namespace {

void append_header(std::vector<uint8_t>& out, MessageType type, size_t payload_length)
{
    uint8_t header[kHeaderSize];
    store_le<uint32_t>(header, static_cast<uint32_t>(payload_length));
    store_le<uint16_t>(header + 4, static_cast<uint16_t>(type));
    store_le<uint16_t>(header + 6, 0);
    out.insert(out.end(), header, header + kHeaderSize);
}

std::string hex16(uint16_t v)
{
    char text[8];
    std::snprintf(text, sizeof text, "0x%04x", v);
    return text;
}

}  // namespace

std::string_view message_type_name(uint16_t type)
{
    switch (static_cast<MessageType>(type)) {
    case MessageType::hello: return "HELLO";
    case MessageType::frame: return "FRAME";
    case MessageType::marker: return "MARKER";
    case MessageType::prepare: return "PREPARE";
    case MessageType::done: return "DONE";
    case MessageType::commit: return "COMMIT";
    case MessageType::abort: return "ABORT";
    case MessageType::restored: return "RESTORED";
    }
    return "unknown";
}

void append_hello(std::vector<uint8_t>& out, const Hello& hello)
{
    append_header(out, MessageType::hello, kHelloFixedSize + hello.id.size());
    uint8_t fixed[kHelloFixedSize] = {};
    std::memcpy(fixed, kHelloMagic, sizeof kHelloMagic);
    store_le<uint16_t>(fixed + 4, kProtocolVersion);
    std::memcpy(fixed + 6, hello.mac.bytes().data(), 6);
    store_le<uint16_t>(fixed + 12, hello.listen.port());
    fixed[14] = static_cast<uint8_t>(hello.listen.family());
    fixed[15] = static_cast<uint8_t>(hello.id.size());
    std::memcpy(fixed + 16, hello.listen.address().data(), 16);
    out.insert(out.end(), fixed, fixed + kHelloFixedSize);
    out.insert(out.end(), hello.id.begin(), hello.id.end());
}

void append_frame(std::vector<uint8_t>& out, std::span<const uint8_t> frame)
{
    append_header(out, MessageType::frame, frame.size());
    out.insert(out.end(), frame.begin(), frame.end());
}

Result<Hello> parse_hello(std::span<const uint8_t> p)
{
    if (p.size() < 6) return Error("HELLO is truncated (" + std::to_string(p.size()) + " bytes)");
    if (std::memcmp(p.data(), kHelloMagic, sizeof kHelloMagic) != 0) return Error("HELLO has a bad magic number");
    const uint16_t version = le16(p, 4);
    if (version != kProtocolVersion)
        return Error("peer speaks protocol version " + std::to_string(version) + ", this VMM speaks version " +
                     std::to_string(kProtocolVersion));
    if (p.size() < kHelloFixedSize) return Error("HELLO is truncated (" + std::to_string(p.size()) + " bytes)");
    const size_t id_length = p[15];
    if (p.size() != kHelloFixedSize + id_length)
        return Error("HELLO is " + std::to_string(p.size()) + " bytes but its id length says " +
                     std::to_string(kHelloFixedSize + id_length));

    Hello hello;
    hello.mac = MacAddress::from_bytes(p.data() + 6);
    const uint8_t family = p[14];
    if (family != 4 && family != 6) return Error("HELLO has unknown address family " + std::to_string(family));
    std::array<uint8_t, 16> address;
    std::memcpy(address.data(), p.data() + 16, address.size());
    if (family == 4 && std::any_of(address.begin() + 4, address.end(), [](uint8_t b) { return b != 0; }))
        return Error("HELLO has an IPv4 listen address with non-zero padding");
    const uint16_t port = le16(p, 12);
    if (port == 0) return Error("HELLO has listen port 0");
    hello.listen = SocketAddress(static_cast<SocketAddress::Family>(family), address, port);
    hello.id.assign(reinterpret_cast<const char*>(p.data() + kHelloFixedSize), id_length);
    auto valid = validate_peer_id(hello.id);
    if (!valid) return valid.error().context("HELLO");
    if (hello.mac.is_multicast() || hello.mac.is_zero())
        return Error("HELLO has guest MAC " + hello.mac.to_string() + ", which is not a unicast address");
    return hello;
}

void MessageDecoder::feed(std::span<const uint8_t> bytes)
{
    if (error_) return;
    // Drop what next() consumed before growing, so the buffer holds at most
    // one partial message plus this feed.
    if (consumed_ > 0) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(consumed_));
        consumed_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
}

Result<std::optional<Message>> MessageDecoder::fail(std::string message)
{
    error_ = Error(std::move(message));
    buffer_.clear();
    buffer_.shrink_to_fit();
    consumed_ = 0;
    return *error_;
}

Result<std::optional<Message>> MessageDecoder::next()
{
    if (error_) return *error_;
    const std::span<const uint8_t> avail(buffer_.data() + consumed_, buffer_.size() - consumed_);
    if (avail.size() < kHeaderSize) return std::optional<Message>();

    // The header is checked as soon as it is complete, so a bad stream is
    // refused before we wait for (and buffer) its payload.
    const uint32_t length = le32(avail, 0);
    const uint16_t type = le16(avail, 4);
    const uint16_t flags = le16(avail, 6);
    size_t max_payload = 0;
    switch (static_cast<MessageType>(type)) {
    case MessageType::hello: max_payload = kMaxHelloPayload; break;
    case MessageType::frame: max_payload = kMaxFrameSize; break;
    case MessageType::marker:
    case MessageType::prepare:
    case MessageType::done:
    case MessageType::commit:
    case MessageType::abort:
    case MessageType::restored:
        return fail("message type " + std::string(message_type_name(type)) + " (" + std::to_string(type) +
                    ") is not supported by protocol version " + std::to_string(kProtocolVersion));
    default:
        return fail("unknown message type " + std::to_string(type));
    }
    if (flags != 0)
        return fail(std::string(message_type_name(type)) + " has flags " + hex16(flags) +
                    ", none are defined in protocol version " + std::to_string(kProtocolVersion));
    if (length > max_payload)
        return fail(std::string(message_type_name(type)) + " payload of " + std::to_string(length) +
                    " bytes exceeds the maximum of " + std::to_string(max_payload));
    if (avail.size() < kHeaderSize + length) return std::optional<Message>();

    const auto payload = avail.subspan(kHeaderSize, length);
    consumed_ += kHeaderSize + length;
    if (static_cast<MessageType>(type) == MessageType::frame)
        return std::optional<Message>(FrameMessage{std::vector<uint8_t>(payload.begin(), payload.end())});
    auto hello = parse_hello(payload);
    if (!hello) return fail(hello.error().message());
    return std::optional<Message>(std::move(hello.value()));
}

}  // namespace vvmm::net
