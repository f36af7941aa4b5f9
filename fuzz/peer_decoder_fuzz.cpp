// libFuzzer target: MessageDecoder, the first code that sees bytes from
// another VMM (or a controller). Input: one byte choosing how the stream is
// split into feeds, then the stream. Checks, beyond "no crash or sanitizer
// report":
//  - memory stays bounded when the caller drains between feeds;
//  - every binary message (HELLO, FRAME, MARKER) re-encodes to exactly
//    the bytes it came from (the decoder accepts one encoding, nothing
//    looser);
//  - a message with a JSON body keeps its header and epoch bytes when
//    re-encoded, and its re-encoding decodes to the same message (JSON text
//    has many spellings of one value, so bytes may differ);
//  - an error is sticky;
//  - in the handshake mode (the input's first byte odd), nothing but HELLO
//    is ever decoded, as on a connection before its HELLO is accepted.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "net/peer_protocol.hpp"

using namespace vvmm::net;

namespace {

void check(bool condition, const char* what)
{
    if (!condition) {
        std::fprintf(stderr, "peer_decoder_fuzz: invariant broken: %s\n", what);
        std::abort();
    }
}

void encode(std::vector<uint8_t>& out, const Message& m)
{
    if (const auto* h = std::get_if<Hello>(&m)) append_hello(out, *h);
    if (const auto* f = std::get_if<FrameMessage>(&m)) append_frame(out, f->frame);
    if (const auto* k = std::get_if<MarkerMessage>(&m)) append_marker(out, k->epoch);
    if (const auto* c = std::get_if<ControlMessage>(&m)) append_control(out, c->type, c->epoch, c->body);
    if (const auto* q = std::get_if<ControlRequest>(&m)) append_ctl_request(out, q->body);
    if (const auto* r = std::get_if<ControlReply>(&m)) append_ctl_reply(out, r->body);
    if (const auto* p = std::get_if<ParityMessage>(&m)) append_parity(out, p->epoch, p->set, p->member, p->offset, p->data);
}

bool has_json(const Message& m)
{
    return std::holds_alternative<ControlMessage>(m) || std::holds_alternative<ControlRequest>(m) ||
           std::holds_alternative<ControlReply>(m);
}

// `m` came from `original` (one whole message); checks its re-encoding.
void check_reencoding(const Message& m, std::span<const uint8_t> original)
{
    std::vector<uint8_t> again;
    encode(again, m);
    if (!has_json(m)) {
        check(again.size() == original.size() && std::equal(again.begin(), again.end(), original.begin()),
              "a decoded message does not re-encode to its input bytes");
        return;
    }
    const size_t fixed = std::holds_alternative<ControlMessage>(m) ? kHeaderSize + kEpochSize : kHeaderSize;
    check(again.size() >= fixed && std::equal(original.begin() + 4, original.begin() + fixed, again.begin() + 4),
          "a JSON message's type, flags or epoch changed on re-encoding");
    check(again.size() <= kMaxMessageSize, "a re-encoded JSON message is over the maximum size");
    MessageDecoder d;
    d.feed(again);
    auto r = d.next();
    check(r.ok() && r.value().has_value(), "a re-encoded JSON message does not decode");
    check(*r.value() == m, "a re-encoded JSON message decodes to something else");
    check(d.buffered_bytes() == 0, "a re-encoded JSON message leaves bytes behind");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    // 0 or 1: the whole stream at once; otherwise feeds of 2..255 bytes.
    const size_t chunk = data[0] <= 1 ? size : data[0];
    const bool handshake = data[0] & 1;
    const std::span<const uint8_t> stream(data + 1, size - 1);

    MessageDecoder decoder;
    decoder.accept_only_hello(handshake);
    size_t decoded_up_to = 0;  // stream offset of the next message
    size_t fed = 0;
    bool failed = false;
    for (size_t off = 0; off < stream.size() && !failed; off += chunk) {
        const auto piece = stream.subspan(off, std::min(chunk, stream.size() - off));
        decoder.feed(piece);
        fed += piece.size();
        check(decoder.buffered_bytes() <= kMaxMessageSize + piece.size(), "decoder buffers more than one message");
        for (;;) {
            auto next = decoder.next();
            if (!next.ok()) {
                check(!next.error().message().empty(), "empty error message");
                check(!decoder.next().ok(), "error is not sticky");
                failed = true;
                break;
            }
            if (!next.value()) break;
            const size_t end = fed - decoder.buffered_bytes();
            check(end > decoded_up_to && end - decoded_up_to <= kMaxMessageSize, "a message of impossible size");
            const Message& m = *next.value();
            check(!handshake || std::holds_alternative<Hello>(m), "a message other than HELLO before HELLO");
            if (const auto* frame = std::get_if<FrameMessage>(&m))
                check(frame->frame.size() <= kMaxFrameSize, "frame over the maximum");
            if (const auto* marker = std::get_if<MarkerMessage>(&m)) check(marker->epoch != 0, "MARKER with epoch 0");
            if (const auto* parity = std::get_if<ParityMessage>(&m)) {
                check(parity->epoch != 0, "PARITY with epoch 0");
                check(parity->data.size() <= kMaxParityData, "PARITY over the maximum");
                check(parity->offset < kMaxParityOffset && parity->data.size() <= kMaxParityOffset - parity->offset,
                      "PARITY past the largest image");
            }
            if (const auto* control = std::get_if<ControlMessage>(&m)) {
                check(control->epoch != 0, "control message with epoch 0");
                check(is_control_type(control->type), "control message of another type");
                check(control->body.is_object(), "control body is not an object");
            }
            check_reencoding(m, stream.subspan(decoded_up_to, end - decoded_up_to));
            decoded_up_to = end;
        }
    }
    return 0;
}
