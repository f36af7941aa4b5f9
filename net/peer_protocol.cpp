#include "net/peer_protocol.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "net/sha256.hpp"
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
    nlohmann::json body;
    try {
        body = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
        std::string what = e.what();
        // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
        if (const size_t bracket = what.find("] "); what.starts_with("[json.exception.") && bracket != what.npos)
            what.erase(0, bracket + 2);
        return Error("body is not valid JSON: " + what);
    }
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
    case MessageType::auth: return "AUTH";
    case MessageType::ctl_request: return "CTL_REQUEST";
    case MessageType::ctl_reply: return "CTL_REPLY";
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
    case MessageType::restored: return true;
    default: return false;
    }
}

std::string_view message_name(const Message& message)
{
    struct Visitor {
        std::string_view operator()(const Hello&) const { return "HELLO"; }
        std::string_view operator()(const AuthMessage&) const { return "AUTH"; }
        std::string_view operator()(const FrameMessage&) const { return "FRAME"; }
        std::string_view operator()(const MarkerMessage&) const { return "MARKER"; }
        std::string_view operator()(const ControlMessage& m) const { return message_type_name(m.type); }
        std::string_view operator()(const ControlRequest&) const { return "CTL_REQUEST"; }
        std::string_view operator()(const ControlReply&) const { return "CTL_REPLY"; }
    };
    return std::visit(Visitor{}, message);
}

void append_hello(std::vector<uint8_t>& out, const Hello& hello)
{
    append_header(out, MessageType::hello, kHelloFixedSize + hello.id.size() + hello.cluster.size());
    uint8_t fixed[kHelloFixedSize] = {};
    std::memcpy(fixed, kHelloMagic, sizeof kHelloMagic);
    store_le<uint16_t>(fixed + 4, kProtocolVersion);
    fixed[6] = static_cast<uint8_t>(hello.role);
    if (hello.role != PeerRole::controller) {  // a controller has no guest and no listen address
        std::memcpy(fixed + 8, hello.mac.bytes().data(), 6);
        store_le<uint16_t>(fixed + 14, hello.listen.port());
        fixed[16] = static_cast<uint8_t>(hello.listen.family());
        std::memcpy(fixed + 20, hello.listen.address().data(), 16);
    }
    fixed[17] = static_cast<uint8_t>(hello.id.size());
    fixed[18] = static_cast<uint8_t>(hello.cluster.size());
    std::memcpy(fixed + 36, hello.nonce.data(), hello.nonce.size());
    out.insert(out.end(), fixed, fixed + kHelloFixedSize);
    out.insert(out.end(), hello.id.begin(), hello.id.end());
    out.insert(out.end(), hello.cluster.begin(), hello.cluster.end());
}

void append_auth(std::vector<uint8_t>& out, const AuthTag& tag)
{
    append_header(out, MessageType::auth, tag.size());
    out.insert(out.end(), tag.begin(), tag.end());
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
    if (p.size() != kHelloFixedSize + id_length + cluster_length)
        return Error("HELLO is " + std::to_string(p.size()) + " bytes but its id and cluster name lengths say " +
                     std::to_string(kHelloFixedSize + id_length + cluster_length));
    if (p[7] != 0 || p[19] != 0) return Error("HELLO has non-zero reserved bytes");

    Hello hello;
    const uint8_t role = p[6];
    if (role != static_cast<uint8_t>(PeerRole::peer) && role != static_cast<uint8_t>(PeerRole::controller))
        return Error("HELLO has unknown role " + std::to_string(role));
    hello.role = static_cast<PeerRole>(role);
    const uint8_t family = p[16];
    const uint16_t port = le16(p, 14);
    std::array<uint8_t, 16> address;
    std::memcpy(address.data(), p.data() + 20, address.size());
    const auto all_zero = [](auto first, auto last) {
        return std::all_of(first, last, [](uint8_t b) { return b == 0; });
    };
    if (hello.role == PeerRole::controller) {
        if (!all_zero(p.begin() + 8, p.begin() + 14) || family != 0 || port != 0 ||
            !all_zero(address.begin(), address.end()))
            return Error("HELLO of a controller has a guest MAC or a listen address");
    } else {
        hello.mac = MacAddress::from_bytes(p.data() + 8);
        if (family != 4 && family != 6) return Error("HELLO has unknown address family " + std::to_string(family));
        if (family == 4 && !all_zero(address.begin() + 4, address.end()))
            return Error("HELLO has an IPv4 listen address with non-zero padding");
        if (port == 0) return Error("HELLO has listen port 0");
        hello.listen = SocketAddress(static_cast<SocketAddress::Family>(family), address, port);
        if (hello.mac.is_multicast() || hello.mac.is_zero())
            return Error("HELLO has guest MAC " + hello.mac.to_string() + ", which is not a unicast address");
    }
    std::memcpy(hello.nonce.data(), p.data() + 36, hello.nonce.size());
    hello.id.assign(reinterpret_cast<const char*>(p.data() + kHelloFixedSize), id_length);
    hello.cluster.assign(reinterpret_cast<const char*>(p.data() + kHelloFixedSize + id_length), cluster_length);
    auto valid = check_name("id", hello.id);
    if (!valid) return valid.error().context("HELLO");
    valid = check_name("cluster name", hello.cluster);
    if (!valid) return valid.error().context("HELLO");
    return hello;
}

Nonce random_nonce()
{
    Nonce nonce;
    size_t filled = 0;
    while (filled < nonce.size()) {
        const ssize_t n = getrandom(nonce.data() + filled, nonce.size() - filled, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            std::fprintf(stderr, "vvmm: getrandom failed: %s\n", std::strerror(errno));
            std::abort();
        }
        filled += static_cast<size_t>(n);
    }
    return nonce;
}

AuthTag auth_tag(std::span<const uint8_t> secret, std::string_view cluster, std::string_view sender_id,
                 const Nonce& sender_nonce, const Nonce& receiver_nonce)
{
    // Length-prefixed, so no two (cluster, id) pairs give the same bytes.
    if (cluster.size() > 255 || sender_id.size() > 255) {
        std::fprintf(stderr, "vvmm: auth_tag: cluster name or id over 255 bytes\n");
        std::abort();
    }
    static constexpr std::string_view kLabel{"vvmm-peer-auth-v2\0", 18};
    std::vector<uint8_t> message;
    message.reserve(kLabel.size() + 2 + cluster.size() + sender_id.size() + 2 * kNonceSize);
    message.insert(message.end(), kLabel.begin(), kLabel.end());
    message.push_back(static_cast<uint8_t>(cluster.size()));
    message.insert(message.end(), cluster.begin(), cluster.end());
    message.push_back(static_cast<uint8_t>(sender_id.size()));
    message.insert(message.end(), sender_id.begin(), sender_id.end());
    message.insert(message.end(), sender_nonce.begin(), sender_nonce.end());
    message.insert(message.end(), receiver_nonce.begin(), receiver_nonce.end());
    return hmac_sha256(secret, message);
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
    case MessageType::auth: min_payload = max_payload = kAuthTagSize; break;
    case MessageType::marker: min_payload = max_payload = kEpochSize; break;
    case MessageType::prepare:
    case MessageType::done:
    case MessageType::commit:
    case MessageType::abort:
    case MessageType::restored:
        min_payload = kEpochSize;
        max_payload = kEpochSize + kMaxJsonSize;
        break;
    case MessageType::ctl_request:
    case MessageType::ctl_reply: max_payload = kMaxJsonSize; break;
    default: return fail("unknown message type " + std::to_string(raw_type));
    }
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
    case MessageType::auth: {
        AuthMessage auth;
        std::memcpy(auth.tag.data(), payload.data(), auth.tag.size());
        return std::optional<Message>(auth);
    }
    case MessageType::marker: {
        const uint64_t epoch = le64(payload, 0);
        if (epoch == 0) return fail("MARKER has epoch 0");
        return std::optional<Message>(MarkerMessage{epoch});
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
