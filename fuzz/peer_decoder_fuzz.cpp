// libFuzzer target: MessageDecoder, the first code that sees bytes from
// another VMM. Input: one byte choosing how the stream is split into feeds,
// then the stream. Checks, beyond "no crash or sanitizer report":
//  - memory stays bounded when the caller drains between feeds;
//  - every decoded message re-encodes to exactly the bytes it came from
//    (the decoder accepts one encoding per message, nothing looser);
//  - an error is sticky.
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    // 0: the whole stream at once; otherwise feeds of 1..255 bytes.
    const size_t chunk = data[0] == 0 ? size : data[0];
    const std::span<const uint8_t> stream(data + 1, size - 1);

    MessageDecoder decoder;
    std::vector<uint8_t> reencoded;
    bool failed = false;
    for (size_t off = 0; off < stream.size() && !failed; off += chunk) {
        const auto piece = stream.subspan(off, std::min(chunk, stream.size() - off));
        decoder.feed(piece);
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
            const Message& m = *next.value();
            if (const auto* hello = std::get_if<Hello>(&m)) {
                append_hello(reencoded, *hello);
            } else {
                const auto& frame = std::get<FrameMessage>(m).frame;
                check(frame.size() <= kMaxFrameSize, "frame over the maximum");
                append_frame(reencoded, frame);
            }
        }
    }
    check(reencoded.size() <= stream.size(), "decoded more bytes than were fed");
    check(reencoded.empty() || std::memcmp(reencoded.data(), stream.data(), reencoded.size()) == 0,
          "a decoded message does not re-encode to its input bytes");
    return 0;
}
