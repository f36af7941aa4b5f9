#include "net/peer_protocol.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "vmm/base/json_field.hpp"
#include "vmm/base/le.hpp"

namespace vvmm::net {

static_assert(kEpochSize + kMaxJsonSize <= kMaxFrameSize, "every message must fit kMaxMessageSize");
static_assert(kMaxHelloPayload <= kMaxFrameSize);

namespace {

void append_header(std::vector<uint8_t>& out, MessageType type, size_t payload_length)
{
    uint8_t header[kHeaderSize];
    store_le<uint32_t>(header, static_cast<uint32_t>(payload_length));
    store_le<uint16_t>(header + 4, static_cast<uint16_t>(type));
    store_le<uint16_t>(header + 6, 0);
    out.insert(out.end(), header, header + kHeaderSize);
}

// One encoding per value: compact, and never throwing on a string that is
// not UTF-8 (it cannot come from the decoder, only from a caller's bug).
std::string dump_json(const nlohmann::json& body)
{
    return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool valid_name_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

// Refuses nesting deeper than kMaxJsonDepth before the JSON library sees the
// text (its parser is iterative, but dump, compare and destroy recurse).
Result<void> check_json_depth(std::span<const uint8_t> text)
{
    size_t depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (uint8_t c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > kMaxJsonDepth)
                return Error("body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return ok();
}

// A number too large for a double parses as infinity, which JSON cannot
// carry (it would be re-sent as null).
bool all_numbers_finite(const nlohmann::json& value)
{
    if (value.is_number_float()) return std::isfinite(value.get<double>());
    if (value.is_structured())
        return std::all_of(value.begin(), value.end(), [](const nlohmann::json& v) { return all_numbers_finite(v); });
    return true;
}

Result<nlohmann::json> parse_json_object(std::span<const uint8_t> text)
{
    if (text.size() > kMaxJsonSize)
        return Error("JSON body of " + std::to_string(text.size()) + " bytes exceeds the maximum of " +
                     std::to_string(kMaxJsonSize));
    // nlohmann stops at a NUL as if the input ended there ("{}\0junk" would
    // pass); valid JSON text never holds one (a string escapes it).
    if (std::find(text.begin(), text.end(), uint8_t{0}) != text.end()) return Error("body holds a NUL byte");
    TRY(check_json_depth(text));
    auto parsed = parse_json(std::string_view(reinterpret_cast<const char*>(text.data()), text.size()));
    if (!parsed) return Error("body is not valid JSON: " + parsed.error().message());
    nlohmann::json body = std::move(parsed).value();
    if (!body.is_object()) return Error(std::string("body is a JSON ") + body.type_name() + ", not an object");
    if (!all_numbers_finite(body)) return Error("body has a number out of range");
    return body;
}

// A name from the wire as it may appear in a log: bytes outside printable
// ASCII (and the quote and backslash) as \xNN.
std::string printable(std::string_view name)
{
    std::string out;
    for (char c : name) {
        const auto b = static_cast<uint8_t>(c);
        if (b >= 0x20 && b < 0x7f && c != '\'' && c != '\\') {
            out += c;
        } else {
            char escaped[8];
            std::snprintf(escaped, sizeof escaped, "\\x%02x", b);
            out += escaped;
        }
    }
    return out;
}

// The rules of a peer id (validate_peer_id), also for cluster names, with
// the offending name escaped: it comes from the wire and goes to a log.
Result<void> check_name(std::string_view what, std::string_view name)
{
    if (name.empty() || name.size() > kMaxPeerIdLength)
        return Error(std::string(what) + " '" + printable(name) + "' must be 1.." + std::to_string(kMaxPeerIdLength) +
                     " characters");
    if (!std::all_of(name.begin(), name.end(), [](char c) { return valid_name_char(static_cast<uint8_t>(c)); }))
        return Error(std::string(what) + " '" + printable(name) +
                     "' may only contain letters, digits, '.', '_' and '-'");
    return ok();
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
    case MessageType::ctl_request: return "CTL_REQUEST";
    case MessageType::ctl_reply: return "CTL_REPLY";
    case MessageType::parity: return "PARITY";
    case MessageType::parity_end: return "PARITY_END";
    case MessageType::parity_begin: return "PARITY_BEGIN";
    }
    return "unknown";
}

bool is_control_type(MessageType type)
{
    switch (type) {
    case MessageType::prepare:
    case MessageType::done:
    case MessageType::commit:
    case MessageType::abort:
    case MessageType::restored:
    case MessageType::parity_end:
    case MessageType::parity_begin: return true;
    default: return false;
    }
}

std::string_view message_name(const Message& message)
{
    struct Visitor {
        std::string_view operator()(const Hello&) const { return "HELLO"; }
        std::string_view operator()(const FrameMessage&) const { return "FRAME"; }
        std::string_view operator()(const MarkerMessage&) const { return "MARKER"; }
        std::string_view operator()(const ControlMessage& m) const { return message_type_name(m.type); }
        std::string_view operator()(const ControlRequest&) const { return "CTL_REQUEST"; }
        std::string_view operator()(const ControlReply&) const { return "CTL_REPLY"; }
        std::string_view operator()(const ParityMessage&) const { return "PARITY"; }
    };
    return std::visit(Visitor{}, message);
}

namespace {

void store_address(uint8_t* port_at, uint8_t* family_at, uint8_t* address_at, const SocketAddress& a)
{
    store_le<uint16_t>(port_at, a.port());
    *family_at = static_cast<uint8_t>(a.family());
    std::memcpy(address_at, a.address().data(), 16);
}

}  // namespace

void append_hello(std::vector<uint8_t>& out, const Hello& hello)
{
    append_header(out, MessageType::hello,
                  kHelloFixedSize + hello.id.size() + hello.cluster.size() + hello.target_id.size());
    uint8_t fixed[kHelloFixedSize] = {};
    std::memcpy(fixed, kHelloMagic, sizeof kHelloMagic);
    store_le<uint16_t>(fixed + 4, kProtocolVersion);
    fixed[6] = static_cast<uint8_t>(hello.role);
    if (hello.role != PeerRole::controller) {  // a controller has no guest and no listen address
        std::memcpy(fixed + 8, hello.mac.bytes().data(), 6);
        store_address(fixed + 14, fixed + 16, fixed + 20, hello.listen);
    }
    fixed[17] = static_cast<uint8_t>(hello.id.size());
    fixed[18] = static_cast<uint8_t>(hello.cluster.size());
    fixed[19] = static_cast<uint8_t>(hello.target_id.size());
    if (hello.target != SocketAddress()) store_address(fixed + 36, fixed + 38, fixed + 40, hello.target);
    out.insert(out.end(), fixed, fixed + kHelloFixedSize);
    out.insert(out.end(), hello.id.begin(), hello.id.end());
    out.insert(out.end(), hello.cluster.begin(), hello.cluster.end());
    out.insert(out.end(), hello.target_id.begin(), hello.target_id.end());
}

void append_frame(std::vector<uint8_t>& out, std::span<const uint8_t> frame)
{
    append_header(out, MessageType::frame, frame.size());
    out.insert(out.end(), frame.begin(), frame.end());
}

void append_marker(std::vector<uint8_t>& out, uint64_t epoch)
{
    append_header(out, MessageType::marker, kEpochSize);
    uint8_t payload[kEpochSize];
    store_le<uint64_t>(payload, epoch);
    out.insert(out.end(), payload, payload + kEpochSize);
}

void append_parity(std::vector<uint8_t>& out, uint64_t epoch, uint32_t set, uint16_t member, uint64_t offset,
                   std::span<const uint8_t> data)
{
    append_header(out, MessageType::parity, kParityFixedSize + data.size());
    uint8_t fixed[kParityFixedSize] = {};
    store_le<uint64_t>(fixed, epoch);
    store_le<uint32_t>(fixed + 8, set);
    store_le<uint16_t>(fixed + 12, member);
    store_le<uint64_t>(fixed + 16, offset);
    out.insert(out.end(), fixed, fixed + kParityFixedSize);
    out.insert(out.end(), data.begin(), data.end());
}

void append_control(std::vector<uint8_t>& out, MessageType type, uint64_t epoch, const nlohmann::json& body)
{
    const std::string text = dump_json(body);
    append_header(out, type, kEpochSize + text.size());
    uint8_t prefix[kEpochSize];
    store_le<uint64_t>(prefix, epoch);
    out.insert(out.end(), prefix, prefix + kEpochSize);
    out.insert(out.end(), text.begin(), text.end());
}

void append_ctl_request(std::vector<uint8_t>& out, const nlohmann::json& body)
{
    const std::string text = dump_json(body);
    append_header(out, MessageType::ctl_request, text.size());
    out.insert(out.end(), text.begin(), text.end());
}

void append_ctl_reply(std::vector<uint8_t>& out, const nlohmann::json& body)
{
    const std::string text = dump_json(body);
    append_header(out, MessageType::ctl_reply, text.size());
    out.insert(out.end(), text.begin(), text.end());
}

Result<void> validate_cluster_name(std::string_view name) { return check_name("cluster name", name); }

namespace {

bool all_zero(std::span<const uint8_t> bytes)
{
    return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

// A listen address in HELLO: port, family and 16 address bytes. Family 0
// (none) only where `optional`, and then all of it zero.
Result<SocketAddress> parse_address(std::span<const uint8_t> p, size_t port_at, size_t family_at, size_t address_at,
                                    bool optional, const char* what)
{
    const uint8_t family = p[family_at];
    const uint16_t port = le16(p, port_at);
    const auto address = p.subspan(address_at, 16);
    if (family == 0 && optional) {
        if (port != 0 || !all_zero(address)) return Error(std::string("HELLO has a ") + what + " without a family");
        return SocketAddress();
    }
    if (family != 4 && family != 6)
        return Error(std::string("HELLO has unknown ") + what + " family " + std::to_string(family));
    if (family == 4 && !all_zero(address.subspan(4)))
        return Error(std::string("HELLO has an IPv4 ") + what + " with non-zero padding");
    if (port == 0) return Error(std::string("HELLO has ") + what + " port 0");
    std::array<uint8_t, 16> bytes;
    std::memcpy(bytes.data(), address.data(), bytes.size());
    return SocketAddress(static_cast<SocketAddress::Family>(family), bytes, port);
}

}  // namespace

Result<Hello> parse_hello(std::span<const uint8_t> p)
{
    if (p.size() < 6) return Error("HELLO is truncated (" + std::to_string(p.size()) + " bytes)");
    if (std::memcmp(p.data(), kHelloMagic, sizeof kHelloMagic) != 0) return Error("HELLO has a bad magic number");
    const uint16_t version = le16(p, 4);
    if (version != kProtocolVersion)
        return Error("peer speaks protocol version " + std::to_string(version) + ", this VMM speaks version " +
                     std::to_string(kProtocolVersion));
    if (p.size() < kHelloFixedSize) return Error("HELLO is truncated (" + std::to_string(p.size()) + " bytes)");
    const size_t id_length = p[17];
    const size_t cluster_length = p[18];
    const size_t target_id_length = p[19];
    const size_t expected = kHelloFixedSize + id_length + cluster_length + target_id_length;
    if (p.size() != expected)
        return Error("HELLO is " + std::to_string(p.size()) + " bytes but its name lengths say " +
                     std::to_string(expected));
    if (p[7] != 0 || p[39] != 0 || !all_zero(p.subspan(56, 12))) return Error("HELLO has non-zero reserved bytes");

    Hello hello;
    const uint8_t role = p[6];
    if (role != static_cast<uint8_t>(PeerRole::peer) && role != static_cast<uint8_t>(PeerRole::controller))
        return Error("HELLO has unknown role " + std::to_string(role));
    hello.role = static_cast<PeerRole>(role);
    if (hello.role == PeerRole::controller) {
        if (!all_zero(p.subspan(8, 9)) || !all_zero(p.subspan(20, 16)))
            return Error("HELLO of a controller has a guest MAC or a listen address");
    } else {
        hello.mac = MacAddress::from_bytes(p.data() + 8);
        TRY_ASSIGN(hello.listen, parse_address(p, 14, 16, 20, false, "listen address"));
        if (hello.mac.is_multicast() || hello.mac.is_zero())
            return Error("HELLO has guest MAC " + hello.mac.to_string() + ", which is not a unicast address");
    }
    TRY_ASSIGN(hello.target, parse_address(p, 36, 38, 40, true, "target address"));
    const char* names = reinterpret_cast<const char*>(p.data() + kHelloFixedSize);
    hello.id.assign(names, id_length);
    hello.cluster.assign(names + id_length, cluster_length);
    hello.target_id.assign(names + id_length + cluster_length, target_id_length);
    auto valid = check_name("id", hello.id);
    if (valid) valid = check_name("cluster name", hello.cluster);
    if (valid && !hello.target_id.empty()) valid = check_name("target id", hello.target_id);
    if (!valid) return valid.error().context("HELLO");
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
    const uint16_t raw_type = le16(avail, 4);
    const uint16_t flags = le16(avail, 6);
    const auto type = static_cast<MessageType>(raw_type);
    const std::string name(message_type_name(raw_type));
    size_t min_payload = 0;
    size_t max_payload = 0;
    switch (type) {
    case MessageType::hello: max_payload = kMaxHelloPayload; break;
    case MessageType::frame: max_payload = kMaxFrameSize; break;
    case MessageType::marker: min_payload = max_payload = kEpochSize; break;
    case MessageType::prepare:
    case MessageType::done:
    case MessageType::commit:
    case MessageType::abort:
    case MessageType::restored:
    case MessageType::parity_end:
    case MessageType::parity_begin:
        min_payload = kEpochSize;
        max_payload = kEpochSize + kMaxJsonSize;
        break;
    case MessageType::parity:
        min_payload = kParityFixedSize;
        max_payload = kParityFixedSize + kMaxParityData;
        break;
    case MessageType::ctl_request:
    case MessageType::ctl_reply: max_payload = kMaxJsonSize; break;
    default: return fail("unknown message type " + std::to_string(raw_type));
    }
    if (only_hello_ && type != MessageType::hello) return fail("a " + name + " came before HELLO");
    if (flags != 0)
        return fail(name + " has flags " + hex16(flags) + ", none are defined in protocol version " +
                    std::to_string(kProtocolVersion));
    if (length > max_payload)
        return fail(name + " payload of " + std::to_string(length) + " bytes exceeds the maximum of " +
                    std::to_string(max_payload));
    if (length < min_payload)
        return fail(name + " payload of " + std::to_string(length) + " bytes is shorter than the " +
                    std::to_string(min_payload) + " it needs");
    if (avail.size() < kHeaderSize + length) return std::optional<Message>();

    const auto payload = avail.subspan(kHeaderSize, length);
    consumed_ += kHeaderSize + length;
    return decode(type, payload);
}

// Decodes a complete payload whose size is within its type's bounds.
Result<std::optional<Message>> MessageDecoder::decode(MessageType type, std::span<const uint8_t> payload)
{
    const std::string name(message_type_name(type));
    switch (type) {
    case MessageType::hello: {
        auto hello = parse_hello(payload);
        if (!hello) return fail(hello.error().message());
        return std::optional<Message>(std::move(hello.value()));
    }
    case MessageType::frame:
        return std::optional<Message>(FrameMessage{std::vector<uint8_t>(payload.begin(), payload.end())});
    case MessageType::marker: {
        const uint64_t epoch = le64(payload, 0);
        if (epoch == 0) return fail("MARKER has epoch 0");
        return std::optional<Message>(MarkerMessage{epoch});
    }
    case MessageType::parity: {
        ParityMessage m{le64(payload, 0), le32(payload, 8), le16(payload, 12), le64(payload, 16),
                        std::vector<uint8_t>(payload.begin() + kParityFixedSize, payload.end())};
        if (m.epoch == 0) return fail("PARITY has epoch 0");
        if (le16(payload, 14) != 0) return fail("PARITY has a non-zero reserved field");
        if (m.offset >= kMaxParityOffset || m.data.size() > kMaxParityOffset - m.offset)
            return fail("PARITY reaches past byte " + std::to_string(kMaxParityOffset) + " of an image");
        return std::optional<Message>(std::move(m));
    }
    case MessageType::ctl_request:
    case MessageType::ctl_reply: {
        auto body = parse_json_object(payload);
        if (!body) return fail(name + " " + body.error().message());
        if (type == MessageType::ctl_request) return std::optional<Message>(ControlRequest{std::move(body.value())});
        return std::optional<Message>(ControlReply{std::move(body.value())});
    }
    default: {  // a control type: next() let no other through
        const uint64_t epoch = le64(payload, 0);
        if (epoch == 0) return fail(name + " has epoch 0");
        auto body = parse_json_object(payload.subspan(kEpochSize));
        if (!body) return fail(name + " " + body.error().message());
        return std::optional<Message>(ControlMessage{type, epoch, std::move(body.value())});
    }
    }
}

}  // namespace vvmm::net
