// channels.bin: the frames that were in flight towards one VM across a
// cluster epoch's cut, per sending peer (named by its VMM id, so a restore
// on other hosts, with other addresses, still finds them). Delivered to the
// guest first at restore, each peer's in order. Its integrity is checked by
// the VM manifest's digest; this decoder checks the structure.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "net/channel_cut.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::net {

struct ChannelState {
    uint64_t epoch = 0;
    struct Peer {
        std::string id;
        RecordedFrames frames;
    };
    std::vector<Peer> peers;

    size_t frame_count() const;
};

std::vector<uint8_t> encode_channel_state(const ChannelState& state);
Result<ChannelState> decode_channel_state(std::span<const uint8_t> bytes);

}  // namespace vvmm::net
