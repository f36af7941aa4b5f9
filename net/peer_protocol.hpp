// The wire protocol between the VMMs of a cluster: the one place that
// describes it. Every VMM holds one connection to every other VMM (see
// peer_mesh.hpp for who dials); both directions carry a stream of messages.
// A controller (a CLI reaching the cluster through a VMM's peer port) uses the
// same framing on a connection of its own.
//
// Every connection is TLS 1.3 authenticated by the cluster's pre-shared key
// (tls_psk.hpp): the messages below travel only inside it, so they are
// encrypted, and a record that was changed, injected, replayed or reordered
// on the path ends the connection. Only members holding the cluster's secret
// complete the TLS handshake; HELLO then says who each end is and whom the
// dialer meant to reach.
//
// Message = header + payload. All integers are little-endian.
//
//   offset size  field
//   0      4     payload length in bytes (not counting the header)
//   4      2     type (MessageType)
//   6      2     flags: none are defined (version 4); must be 0
//   8      n     payload
//
// The header layout never changes; everything else may change with the
// protocol version, which HELLO carries at a fixed place so that any two
// versions can tell that they differ. An unknown type, non-zero flags, or a
// payload over its type's maximum is a protocol error (the header alone
// tells); so is any payload that breaks its type's rules below. A protocol
// error closes the connection with a logged error. Before HELLO has been
// accepted, a connection may carry nothing but HELLO: the decoder is told
// (MessageDecoder::accept_only_hello) and refuses any other type from its
// header, before reading its payload.
//
// ---- Version 4 messages -----------------------------------------------------
//
// HELLO (type 1): the first message on a connection, in both directions,
// right after the TLS handshake. The dialing side sends it at once; the
// accepting side answers with its own HELLO once it has recognised the
// dialer as one of its configured peers (or as a controller) and checked
// that the dialer meant to reach this VMM. The version is checked first: a
// HELLO of another version is refused for its version, whatever follows it.
//
//   offset size  field
//   0      4     magic "VVMN" (bytes 56 56 4d 4e)
//   4      2     protocol version (kProtocolVersion = 4)
//   6      1     role: 1 = peer VMM, 2 = controller
//   7      1     reserved, 0
//   8      6     sender's guest MAC (unicast; all zero for a controller)
//   14     2     sender's listen port (1..65535; 0 for a controller)
//   16     1     listen address family: 4 or 6 (0 for a controller)
//   17     1     id length n, 1..64
//   18     1     cluster name length m, 1..64
//   19     1     target id length k, 0..64 (0: not stated)
//   20     16    listen address (IPv4: first 4 bytes, the rest zero; all
//                zero for a controller)
//   36     2     target's listen port (0 with family 0)
//   38     1     target's address family: 4, 6, or 0 (not stated)
//   39     1     reserved, 0
//   40     16    target's listen address (as above; zero with family 0)
//   56     12    reserved, 0
//   68     n     sender's id, [A-Za-z0-9._-]
//   68+n   m     cluster name, [A-Za-z0-9._-]
//   68+n+m k     target id, [A-Za-z0-9._-]
//
// The target is whom the sender meant to reach: the dialer states the
// address it dialled (and the id it expects there, when it knows it); the
// accepting side states the dialer's. A receiver refuses a HELLO whose
// target is another VMM: a relay that takes a down peer's address cannot
// splice a connection meant for that peer onto another VMM (a dialer
// checks the acceptor's listen address and id, too). The accepting side
// finds out which configured peer dialed it from the listen address (the
// source port of a connection says nothing).
//
// FRAME (type 2): the payload is one Ethernet frame as the guest sent it (no
// virtio header), 0..65535 bytes. The framing accepts any length in that
// range; a frame shorter than an Ethernet header is guest data, dropped by
// the receiver with a rate-limited log, not a protocol error.
//
// MARKER (type 3): payload exactly 8 bytes, the epoch E (u64, > 0). On this
// connection, separates the frames its sender sent before capturing epoch E
// from those it sent after.
//
// PREPARE (16), DONE (17), COMMIT (18), ABORT (19), RESTORED (20): the
// coordinated checkpoint/restore control messages. Payload: the epoch E (u64,
// > 0), then one JSON object in UTF-8 (at most kMaxJsonSize bytes; e.g. DONE
// carries the digest of the sender's durable state, or why it failed). The
// keys of each body are defined where the messages are handled; the protocol
// only requires an object.
//
// CTL_REQUEST (21), CTL_REPLY (22): payload one JSON object (at most
// kMaxJsonSize bytes): a controller's request to the VMM it reached, and that
// VMM's answer. Only on a controller's connection, after HELLO.
//
// PARITY (23): a diskless cluster's parity update (issue 12): the change of
// part of a member's checkpoint image, old XOR new, for the VMM that holds
// one of its set's parity blocks to fold in.
//
//   offset size  field
//   0      8     epoch E (u64, > 0)
//   8      4     parity set (index in the cluster's placement)
//   12     2     member (index in the set)
//   14     2     reserved, 0
//   16     8     byte offset in the member's image (< kMaxParityOffset)
//   24     n     the change, 0..kMaxParityData bytes
//
// PARITY_BEGIN (25) and PARITY_END (24): control messages like DONE (an
// epoch and a JSON object) around one member's PARITY messages of E to one
// holder: BEGIN names the committed epoch the changes are against ("base",
// 0: none, the block starts from zeros), END the image's length. They
// travel on the member's own connection, so a holder may see them before
// the initiator's PREPARE of E.
//
// Type 4 (AUTH of version 2) is not used any more: TLS authenticates.
//
// Between peers, after HELLO: FRAME, MARKER, PREPARE..RESTORED and PARITY..PARITY_BEGIN. A
// controller's connection carries CTL_REQUEST from the controller and
// CTL_REPLY to it, nothing else.
//
// ---- Checkpoint epoch E: sequence diagram -----------------------------------
// I is the initiator (the VMM that `vvmm checkpoint --all` reached), P and Q
// the other VMMs. Epochs only grow; one runs at a time.
//
//   I                         P                         Q
//   |--PREPARE(E)------------>|                         |
//   |--PREPARE(E)-------------------------------------->|
//   | capture I               |                         |
//   |--MARKER(E)------------->|                         |
//   |--MARKER(E)--------------------------------------->|
//   |                         | capture P               |
//   |                         |                         | capture Q
//   |<-MARKER(E)--------------|--MARKER(E)------------->|
//   |<-MARKER(E)----------------------------------------|
//   |                         |<-MARKER(E)--------------|
//   |<-DONE(E, body)----------|                         |
//   |<-DONE(E, body)------------------------------------|
//   write the cluster manifest for E atomically (after all DONEs)
//   |--COMMIT(E)------------->|                         |
//   |--COMMIT(E)--------------------------------------->|
//
// Rules, for each VMM, about each connection from a peer X:
//  1. Capture: the initiator captures when it starts E; every other VMM
//     when PREPARE(E) (which carries the mode) arrives. A MARKER(E) that
//     comes first (it travels on another connection than PREPARE) begins E
//     at that VMM and falls under rule 2. At its capture a VMM pauses its
//     VM, saves the VM's state, and while the VM is still paused queues
//     MARKER(E) on every connection to a peer, behind the frames already
//     queued there and before any later frame; no frame reaches its guest
//     between the state capture and that instant.
//  2. A connection whose MARKER(E) arrives before this VMM's capture is held
//     (not read) until the capture is done: what follows the marker was sent
//     after X's cut and must not reach this guest before its own cut. That
//     connection's channel state for E is empty.
//  3. Frames arriving on a connection after this VMM's capture and before
//     that connection's MARKER(E) were in flight across the cut: they are
//     recorded as the channel state of that connection for E (and delivered
//     to the guest as usual if it is running).
//  4. DONE(E, ...) once the local state and the channel state of every
//     connection (MARKER(E) received on each) are durable, or at once with
//     the error if that failed.
//  5. When every VMM answered DONE with success, the initiator writes the
//     cluster manifest for E atomically, then sends COMMIT(E). A VMM that
//     fails or times out makes it send ABORT(E) instead: every VM goes on
//     running, E is discarded, recording stops and held connections are
//     read again. PREPARE or MARKER of an epoch that has already ended
//     (COMMIT or ABORT) is ignored: a late MARKER of an aborted epoch.
//
// Restore of epoch E (every VMM started from its part of the manifest):
//
//   I                         P                         Q
//   load E, paused            load E, paused            load E, paused
//   |                         |                         |
//   |--RESTORED(E)----------->|<-RESTORED(E)------------|
//   |<-RESTORED(E)------------|--RESTORED(E)----------->|
//   |--RESTORED(E)------------------------------------->|
//   |<-RESTORED(E)--------------------------------------|
//   resume                    resume                    resume
//
//  6. Every VMM loads paused and then sends RESTORED(E) to every peer (its
//     guest sends nothing new before it resumes; a frame its card had
//     pending at the cut may go out first, which changes nothing).
//  7. The channel frames recorded for a connection are delivered to the
//     guest before any new frame read from that connection's peer.
//  8. A VMM resumes its guest once it has RESTORED(E) from every peer.
// -----------------------------------------------------------------------------
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/net_spec.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::net {

inline constexpr uint16_t kProtocolVersion = 4;
inline constexpr uint8_t kHelloMagic[4] = {'V', 'V', 'M', 'N'};

inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kEthernetHeaderSize = 14;  // smallest frame a peer delivers to its guest
inline constexpr size_t kMaxFrameSize = 65535;
// Generous, so that a HELLO of another protocol version is still read and
// refused for its version, not for its size.
inline constexpr size_t kMaxHelloPayload = 4096;
inline constexpr size_t kHelloFixedSize = 68;
inline constexpr size_t kMaxClusterNameLength = kMaxPeerIdLength;  // same rules as an id
inline constexpr size_t kEpochSize = 8;
// JSON bodies of control messages; with the epoch they stay under a FRAME's
// maximum, so kMaxMessageSize bounds every message.
inline constexpr size_t kMaxJsonSize = 60 * 1024;
// Nesting deeper than this is refused: the JSON library walks values
// recursively, and no body of ours nests more than a few levels.
inline constexpr size_t kMaxJsonDepth = 32;
inline constexpr size_t kMaxMessageSize = kHeaderSize + kMaxFrameSize;
inline constexpr size_t kParityFixedSize = 24;
inline constexpr size_t kMaxParityData = 14 * 4096;  // whole pages, under a FRAME's maximum
inline constexpr uint64_t kMaxParityOffset = 1ull << 40;

enum class MessageType : uint16_t {
    hello = 1,
    frame = 2,
    marker = 3,
    prepare = 16,
    done = 17,
    commit = 18,
    abort = 19,
    restored = 20,
    ctl_request = 21,
    ctl_reply = 22,
    parity = 23,
    parity_end = 24,
    parity_begin = 25,
};

// "HELLO", "FRAME", ... or "unknown".
std::string_view message_type_name(uint16_t type);
inline std::string_view message_type_name(MessageType type) { return message_type_name(static_cast<uint16_t>(type)); }
// PREPARE, DONE, COMMIT, ABORT, RESTORED, PARITY_END or PARITY_BEGIN: an epoch and a JSON body.
bool is_control_type(MessageType type);

enum class PeerRole : uint8_t { peer = 1, controller = 2 };

struct Hello {
    PeerRole role = PeerRole::peer;
    // For a controller: not sent; decoded as the defaults (zero MAC,
    // SocketAddress()).
    MacAddress mac;
    SocketAddress listen;
    std::string id;
    std::string cluster;
    // Whom the sender meant to reach; SocketAddress() and "" when not stated.
    SocketAddress target;
    std::string target_id;

    bool operator==(const Hello&) const = default;
};

struct FrameMessage {
    std::vector<uint8_t> frame;
    bool operator==(const FrameMessage&) const = default;
};

struct MarkerMessage {
    uint64_t epoch = 0;
    bool operator==(const MarkerMessage&) const = default;
};

// PREPARE, DONE, COMMIT, ABORT or RESTORED (is_control_type(type)).
struct ControlMessage {
    MessageType type = MessageType::prepare;
    uint64_t epoch = 0;
    nlohmann::json body = nlohmann::json::object();
    bool operator==(const ControlMessage&) const = default;
};

struct ParityMessage {
    uint64_t epoch = 0;
    uint32_t set = 0;
    uint16_t member = 0;
    uint64_t offset = 0;
    std::vector<uint8_t> data;
    bool operator==(const ParityMessage&) const = default;
};

struct ControlRequest {
    nlohmann::json body = nlohmann::json::object();
    bool operator==(const ControlRequest&) const = default;
};

struct ControlReply {
    nlohmann::json body = nlohmann::json::object();
    bool operator==(const ControlReply&) const = default;
};

using Message =
    std::variant<Hello, FrameMessage, MarkerMessage, ControlMessage, ControlRequest, ControlReply, ParityMessage>;

// The type name of a decoded message, for logs ("HELLO", "DONE", ...).
std::string_view message_name(const Message& message);

// Encoders append one whole message to `out`. They encode what they are
// given; the caller keeps to the rules above (valid id and cluster name,
// epoch > 0, a JSON object within kMaxJsonSize), which the decoder enforces.
// JSON strings that are not valid UTF-8 are encoded with U+FFFD in their
// place rather than throwing.
void append_hello(std::vector<uint8_t>& out, const Hello& hello);
void append_frame(std::vector<uint8_t>& out, std::span<const uint8_t> frame);
void append_marker(std::vector<uint8_t>& out, uint64_t epoch);
// `type` must be a control type (is_control_type).
void append_control(std::vector<uint8_t>& out, MessageType type, uint64_t epoch, const nlohmann::json& body);
void append_ctl_request(std::vector<uint8_t>& out, const nlohmann::json& body);
// `data` at most kMaxParityData bytes.
void append_parity(std::vector<uint8_t>& out, uint64_t epoch, uint32_t set, uint16_t member, uint64_t offset,
                   std::span<const uint8_t> data);
void append_ctl_reply(std::vector<uint8_t>& out, const nlohmann::json& body);
inline size_t encoded_frame_size(size_t frame_bytes) { return kHeaderSize + frame_bytes; }

// Checks and decodes a HELLO payload (the version first).
Result<Hello> parse_hello(std::span<const uint8_t> payload);

// A cluster name follows the rules of a peer id: [A-Za-z0-9._-]{1,64}.
Result<void> validate_cluster_name(std::string_view name);

// Turns a byte stream into messages, whatever the stream's split into reads.
// Pure: no I/O. After the first protocol error it returns that error forever
// (the connection is unusable). Holds at most one partial message plus the
// last fed bytes, so a caller that drains next() before feeding again uses
// bounded memory.
class MessageDecoder {
public:
    void feed(std::span<const uint8_t> bytes);
    // A complete message, std::nullopt if more bytes are needed, or the
    // protocol error (unknown type, flags, bad size, bad payload).
    Result<std::optional<Message>> next();
    size_t buffered_bytes() const { return buffer_.size() - consumed_; }
    // Until the peer's HELLO is accepted: any other type is a protocol error
    // from its header alone, so no payload of it is held or decoded.
    void accept_only_hello(bool only) { only_hello_ = only; }

private:
    Result<std::optional<Message>> fail(std::string message);
    Result<std::optional<Message>> decode(MessageType type, std::span<const uint8_t> payload);

    std::vector<uint8_t> buffer_;
    size_t consumed_ = 0;
    std::optional<Error> error_;
    bool only_hello_ = false;
};

}  // namespace vvmm::net
