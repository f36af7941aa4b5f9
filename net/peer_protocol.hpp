// The wire protocol between the VMMs of a cluster: the one place that
// describes it. Every VMM holds one TCP connection to every other VMM (see
// peer_mesh.hpp for who dials); both directions carry a stream of messages.
//
// Message = header + payload. All integers are little-endian.
//
//   offset size  field
//   0      4     payload length in bytes (not counting the header)
//   4      2     type (MessageType)
//   6      2     flags: none are defined in version 1; must be 0
//   8      n     payload
//
// The header layout never changes; everything else may change with the
// protocol version, which HELLO carries at a fixed place so that any two
// versions can tell that they differ.
//
// HELLO (type 1): the first message on a connection, in both directions. The
// dialing side sends it at once; the accepting side answers with its own
// HELLO once it has recognised the dialer as one of its configured peers. A
// connection that starts with anything else, or whose HELLO is malformed or
// has another version, is closed with a logged error.
//
//   offset size  field
//   0      4     magic "VVMN" (bytes 56 56 4d 4e)
//   4      2     protocol version (kProtocolVersion)
//   6      6     sender's guest MAC
//   12     2     sender's listen port
//   14     1     listen address family: 4 or 6
//   15     1     id length n, 1..64
//   16     16    listen address (IPv4: first 4 bytes, the rest zero)
//   32     n     sender's id, [A-Za-z0-9._-]
//
// The accepting side finds out which configured peer dialed it from the
// listen address (the source port of a connection says nothing).
//
// FRAME (type 2): the payload is one Ethernet frame as the guest sent it (no
// virtio header), 0..65535 bytes. The framing accepts any length in that
// range; a frame shorter than an Ethernet header is guest data, dropped by
// the receiver with a rate-limited log, not a protocol error.
//
// Reserved now, implemented with checkpoints (a version 1 peer that receives
// one closes the connection as for an unknown type):
//   MARKER (3)      separates the frames sent before a checkpoint epoch's cut
//                   from those sent after it on this connection
//   PREPARE (16), DONE (17), COMMIT (18), ABORT (19), RESTORED (20)
//                   the coordinated checkpoint/restore control messages
//
// ---- Checkpoint epoch: sequence diagram -------------------------------------
// TODO(checkpoint): the epoch E sequence (PREPARE / MARKER / DONE / COMMIT /
// ABORT, restore with RESTORED and re-delivery of recorded channel frames)
// and the payload layouts of those messages go here, together with the
// protocol version bump that introduces them.
// -----------------------------------------------------------------------------
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "net/net_spec.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::net {

inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr uint8_t kHelloMagic[4] = {'V', 'V', 'M', 'N'};

inline constexpr size_t kHeaderSize = 8;
inline constexpr size_t kEthernetHeaderSize = 14;  // smallest frame a peer delivers to its guest
inline constexpr size_t kMaxFrameSize = 65535;
// Generous, so that a HELLO of another protocol version is still read and
// refused for its version, not for its size.
inline constexpr size_t kMaxHelloPayload = 4096;
inline constexpr size_t kHelloFixedSize = 32;
inline constexpr size_t kMaxMessageSize = kHeaderSize + kMaxFrameSize;

enum class MessageType : uint16_t {
    hello = 1,
    frame = 2,
    marker = 3,
    prepare = 16,
    done = 17,
    commit = 18,
    abort = 19,
    restored = 20,
};

// "HELLO", "FRAME", ... or "unknown".
std::string_view message_type_name(uint16_t type);

struct Hello {
    MacAddress mac;
    SocketAddress listen;
    std::string id;

    bool operator==(const Hello&) const = default;
};

struct FrameMessage {
    std::vector<uint8_t> frame;
};

using Message = std::variant<Hello, FrameMessage>;

// Encoders append one whole message to `out`.
void append_hello(std::vector<uint8_t>& out, const Hello& hello);
void append_frame(std::vector<uint8_t>& out, std::span<const uint8_t> frame);
inline size_t encoded_frame_size(size_t frame_bytes) { return kHeaderSize + frame_bytes; }

// Checks and decodes a HELLO payload (the version first).
Result<Hello> parse_hello(std::span<const uint8_t> payload);

// Turns a byte stream into messages, whatever the stream's split into reads.
// Pure: no I/O. After the first protocol error it returns that error forever
// (the connection is unusable). Holds at most one partial message plus the
// last fed bytes, so a caller that drains next() before feeding again uses
// bounded memory.
class MessageDecoder {
public:
    void feed(std::span<const uint8_t> bytes);
    // A complete message, std::nullopt if more bytes are needed, or the
    // protocol error (unknown or reserved type, flags, oversize, bad HELLO).
    Result<std::optional<Message>> next();
    size_t buffered_bytes() const { return buffer_.size() - consumed_; }

private:
    Result<std::optional<Message>> fail(std::string message);

    std::vector<uint8_t> buffer_;
    size_t consumed_ = 0;
    std::optional<Error> error_;
};

}  // namespace vvmm::net
