#include "net/channel_state.hpp"

#include "net/peer_protocol.hpp"
#include "vmm/base/state_stream.hpp"

namespace vvmm::net {
namespace {

constexpr uint32_t kMagic = 0x53435656;  // "VVCS"
constexpr uint32_t kVersion = 1;
// What a recorder may write (the cut fails its epoch beyond it), so every
// channels.bin a committed epoch has can be read back.
constexpr uint64_t kMaxFramesPerPeer = RecordLimits{}.frames_per_peer;
constexpr size_t kMaxPeers = 4096;

}  // namespace

size_t ChannelState::frame_count() const
{
    size_t n = 0;
    for (const auto& p : peers) n += p.frames.size();
    return n;
}

std::vector<uint8_t> encode_channel_state(const ChannelState& state)
{
    StateWriter w;
    w.u32(kMagic);
    w.u32(kVersion);
    w.u64(state.epoch);
    w.u32(static_cast<uint32_t>(state.peers.size()));
    for (const auto& p : state.peers) {
        w.string(p.id);
        w.u64(p.frames.size());
        for (const auto& f : p.frames) w.bytes(f);
    }
    return w.take();
}

Result<ChannelState> decode_channel_state(std::span<const uint8_t> bytes)
{
    StateReader r(bytes, "channels.bin");
    TRY_ASSIGN(uint32_t magic, r.u32());
    if (magic != kMagic) return r.err("not a channel state file");
    TRY_ASSIGN(uint32_t version, r.u32());
    if (version != kVersion) return r.err("version " + std::to_string(version) + " is not " + std::to_string(kVersion));
    ChannelState s;
    TRY_ASSIGN(s.epoch, r.u64());
    TRY_ASSIGN(uint32_t peers, r.u32());
    if (peers > kMaxPeers) return r.err(std::to_string(peers) + " peers");
    for (uint32_t i = 0; i < peers; ++i) {
        ChannelState::Peer p;
        TRY_ASSIGN(p.id, r.string(64));
        if (p.id.empty()) return r.err("a peer without an id");
        TRY_ASSIGN(uint64_t frames, r.u64());
        if (frames > kMaxFramesPerPeer || frames > r.remaining() / 8) return r.err(std::to_string(frames) + " frames");
        for (uint64_t k = 0; k < frames; ++k) {
            TRY_ASSIGN(auto f, r.bytes(kMaxFrameSize));
            if (f.size() < kEthernetHeaderSize) return r.err("a frame of " + std::to_string(f.size()) + " bytes");
            p.frames.emplace_back(f.begin(), f.end());
        }
        s.peers.push_back(std::move(p));
    }
    TRY(r.expect_end());
    return s;
}

}  // namespace vvmm::net
