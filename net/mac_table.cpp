#include "net/mac_table.hpp"

#include <iterator>

namespace vvmm::net {

void MacTable::learn(const MacAddress& mac, size_t peer)
{
    if (mac.is_multicast() || mac.is_zero()) return;
    const auto it = entries_.find(mac.as_u64());
    if (it != entries_.end()) {
        if (it->second.pinned && it->second.peer != peer) return;
        it->second.peer = peer;
        return;
    }
    if (entries_.size() < capacity_) entries_.emplace(mac.as_u64(), Entry{peer, false});
}

void MacTable::pin(const MacAddress& mac, size_t peer)
{
    if (mac.is_multicast() || mac.is_zero()) return;
    // One per peer, so always admitted, even when learning has filled the table.
    entries_[mac.as_u64()] = Entry{peer, true};
}

std::optional<size_t> MacTable::lookup(const MacAddress& mac) const
{
    const auto it = entries_.find(mac.as_u64());
    if (it == entries_.end()) return std::nullopt;
    return it->second.peer;
}

void MacTable::forget_peer(size_t peer)
{
    std::erase_if(entries_, [peer](const auto& entry) { return entry.second.peer == peer; });
}

}  // namespace vvmm::net
