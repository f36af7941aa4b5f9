// The switch's forwarding table: which peer a guest MAC lives behind,
// learned from the source address of received frames and from HELLO. Pure;
// the mesh guards it with its lock.
#pragma once

#include <cstddef>
#include <optional>
#include <unordered_map>

#include "net/net_spec.hpp"

namespace vvmm::net {

class MacTable {
public:
    // Source MACs are guest-controlled: the bound keeps a guest that makes
    // up addresses from growing the table. Past it, new MACs are not learned
    // and frames to them are flooded, which is correct, only less direct.
    static constexpr size_t kDefaultCapacity = 4096;

    explicit MacTable(size_t capacity = kDefaultCapacity) : capacity_(capacity) {}

    // From a received frame's source: remembers that `mac` is behind `peer`
    // (a MAC that moves is updated), unless `mac` is pinned to another peer.
    // Multicast and all-zero addresses are never learned.
    void learn(const MacAddress& mac, size_t peer);
    // From a HELLO: the peer's own guest MAC. A guest elsewhere that sends
    // frames with this source address cannot pull its traffic away.
    void pin(const MacAddress& mac, size_t peer);
    std::optional<size_t> lookup(const MacAddress& mac) const;
    // The peer's connection is gone: its MACs may reappear elsewhere.
    void forget_peer(size_t peer);
    size_t size() const { return entries_.size(); }

private:
    struct Entry {
        size_t peer;
        bool pinned;
    };
    size_t capacity_;
    std::unordered_map<uint64_t, Entry> entries_;
};

}  // namespace vvmm::net
