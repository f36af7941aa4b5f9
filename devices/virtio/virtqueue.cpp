#include "devices/virtio/virtqueue.hpp"

#include <atomic>
#include <cstring>

#include "vmm/base/le.hpp"

namespace vvmm::dev {
namespace {

constexpr uint64_t kDescSize = 16;

// Ring fields are shared with the guest's CPUs: access them atomically with
// the ordering the virtio memory model asks for.
uint16_t load_acquire16(uint8_t* p)
{
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).load(std::memory_order_acquire);
}
void store_release16(uint8_t* p, uint16_t v)
{
    std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p)).store(v, std::memory_order_release);
}

// Host views of the next `len` bytes of a chain from (seg, off) on, advancing
// the cursor. The caller checked that the chain holds them; the addresses
// were validated when the chain was walked.
void take_spans(const vmm::GuestMemory& mem, const DescriptorChain& chain, size_t& seg, uint64_t& off, uint64_t len,
                std::vector<std::span<uint8_t>>& out)
{
    while (len) {
        const ChainSegment& s = chain.segments[seg];
        const uint64_t n = std::min<uint64_t>(len, s.len - off);
        out.push_back(mem.span(s.gpa + off, n).value());
        len -= n;
        off += n;
        if (off == s.len) {
            ++seg;
            off = 0;
        }
    }
}

std::string hex(uint64_t v)
{
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

}  // namespace

Result<Virtqueue> Virtqueue::create(const vmm::GuestMemory& mem, const QueueAddresses& a, bool event_idx)
{
    if (a.size == 0 || a.size > kMaxSize || (a.size & (a.size - 1)))
        return Error("queue size " + std::to_string(a.size) + " is not a power of two up to " + std::to_string(kMaxSize));
    if (a.desc % 16 || a.avail % 2 || a.used % 4) return Error("virtqueue rings are misaligned");
    const uint64_t n = a.size;
    if (!mem.span(a.desc, n * kDescSize)) return Error("descriptor table at " + hex(a.desc) + " is outside RAM");
    if (!mem.span(a.avail, 6 + 2 * n)) return Error("available ring at " + hex(a.avail) + " is outside RAM");
    if (!mem.span(a.used, 6 + 8 * n)) return Error("used ring at " + hex(a.used) + " is outside RAM");
    return Virtqueue(mem, a, event_idx);
}

uint16_t Virtqueue::avail_idx() const
{
    return load_acquire16(mem_->span(addr_.avail + 2, 2).value().data());
}

Virtqueue::RingView Virtqueue::ring_view() const
{
    auto field = [this](uint64_t gpa) { return load_acquire16(mem_->span(gpa, 2).value().data()); };
    RingView v;
    v.avail_flags = field(addr_.avail);
    v.avail_idx = field(addr_.avail + 2);
    v.used_event = field(addr_.avail + 4 + 2 * uint64_t(addr_.size));
    v.used_flags = field(addr_.used);
    v.used_idx = field(addr_.used + 2);
    v.avail_event = field(addr_.used + 4 + 8 * uint64_t(addr_.size));
    return v;
}

bool Virtqueue::has_available() const { return new_chains() != 0; }

void Virtqueue::set_positions(const Positions& p)
{
    last_avail_ = p.last_avail;
    used_idx_ = p.used_idx;
    signalled_used_ = p.signalled_used;
    notifications_ = p.notifications;
}

Result<std::optional<DescriptorChain>> Virtqueue::pop()
{
    uint16_t pending = new_chains();
    // Empty while the driver is meant to kick us: it kicks only once its index
    // passes the avail_event we last stored, and that store may still sit in our
    // store buffer while it reads the old value (each side then misses the
    // other's write). Publish it behind a full fence and look once more.
    if (pending == 0 && notifications_ && enable_notifications()) pending = new_chains();
    if (pending == 0) return std::optional<DescriptorChain>();
    if (pending > addr_.size)
        return Error("driver claims " + std::to_string(pending) + " new buffers in a queue of " + std::to_string(addr_.size));
    auto ring = mem_->span(addr_.avail + 4 + 2 * uint64_t(last_avail_ % addr_.size), 2).value();
    const uint16_t head = load_le<uint16_t>(ring.data());
    if (head >= addr_.size) return Error("available ring names descriptor " + std::to_string(head) + " beyond the queue");
    DescriptorChain chain;
    chain.head = head;
    TRY(walk(head, chain));
    ++last_avail_;
    if (event_idx_ && notifications_) {
        // avail_event: tell the driver which index should next kick us.
        auto ev = mem_->span(addr_.used + 4 + 8 * uint64_t(addr_.size), 2).value();
        store_release16(ev.data(), last_avail_);
        mem_->mark_dirty(ev);
    }
    return std::optional<DescriptorChain>(std::move(chain));
}

Result<void> Virtqueue::walk(uint16_t head, DescriptorChain& chain) const
{
    auto table = mem_->span(addr_.desc, uint64_t(addr_.size) * kDescSize).value();
    uint16_t index = head;
    for (unsigned count = 0;; ++count) {
        // A chain can never be longer than the queue: more means a loop.
        if (count >= addr_.size) return Error("descriptor chain loops or is longer than the queue");
        const uint8_t* d = table.data() + uint64_t(index) * kDescSize;
        const uint64_t gpa = load_le<uint64_t>(d);
        const uint32_t len = load_le<uint32_t>(d + 8);
        const uint16_t flags = load_le<uint16_t>(d + 12);
        const uint16_t next = load_le<uint16_t>(d + 14);
        if (flags & vring::kDescIndirect) {
            if (flags & vring::kDescNext) return Error("indirect descriptor with NEXT set");
            if (!chain.segments.empty()) return Error("indirect descriptor inside a chain");
            return walk_indirect(gpa, len, chain);
        }
        TRY(add_segment(gpa, len, flags, chain));
        if (!(flags & vring::kDescNext)) return ok();
        if (next >= addr_.size) return Error("descriptor " + std::to_string(index) + " links to " + std::to_string(next) + " beyond the queue");
        index = next;
    }
}

Result<void> Virtqueue::walk_indirect(uint64_t table_gpa, uint32_t len, DescriptorChain& chain) const
{
    if (len == 0 || len % kDescSize) return Error("indirect table length " + std::to_string(len) + " is not a multiple of 16");
    const uint32_t n = len / kDescSize;
    if (n > kMaxIndirect) return Error("indirect table of " + std::to_string(n) + " descriptors is too long");
    auto table = mem_->span(table_gpa, len);
    if (!table) return Error("indirect table at " + hex(table_gpa) + " is outside RAM");
    uint32_t index = 0;
    for (uint32_t count = 0;; ++count) {
        if (count >= n) return Error("indirect chain loops");
        const uint8_t* d = table.value().data() + uint64_t(index) * kDescSize;
        const uint16_t flags = load_le<uint16_t>(d + 12);
        if (flags & vring::kDescIndirect) return Error("nested indirect descriptor");
        TRY(add_segment(load_le<uint64_t>(d), load_le<uint32_t>(d + 8), flags, chain));
        if (!(flags & vring::kDescNext)) return ok();
        index = load_le<uint16_t>(d + 14);
        if (index >= n) return Error("indirect descriptor links beyond its table");
    }
}

Result<void> Virtqueue::add_segment(uint64_t gpa, uint32_t len, uint16_t flags, DescriptorChain& chain) const
{
    const bool writable = flags & vring::kDescWrite;
    if (!writable && chain.writable_bytes) return Error("device-readable descriptor after a writable one");
    if (len && !mem_->span(gpa, len)) return Error("buffer " + hex(gpa) + "+" + hex(len) + " is outside RAM");
    if (len == 0) return ok();  // harmless, and nothing to transfer
    chain.segments.push_back({gpa, len, writable});
    (writable ? chain.writable_bytes : chain.readable_bytes) += len;
    return ok();
}

void Virtqueue::push_used(uint16_t head, uint32_t written)
{
    auto elem = mem_->span(addr_.used + 4 + 8 * uint64_t(used_idx_ % addr_.size), 8).value();
    store_le<uint32_t>(elem.data(), head);
    store_le<uint32_t>(elem.data() + 4, written);
    ++used_idx_;
    // The element must be visible before the index that publishes it.
    auto idx = mem_->span(addr_.used + 2, 2).value();
    store_release16(idx.data(), used_idx_);
    mem_->mark_dirty(elem);
    mem_->mark_dirty(idx);
}

bool Virtqueue::should_notify()
{
    // Order our used-index store before reading the driver's suppression
    // fields (the driver does the mirror image).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t old = signalled_used_;
    const uint16_t now = used_idx_;
    if (old == now) return false;
    signalled_used_ = now;
    if (event_idx_) {
        const uint16_t used_event = load_acquire16(mem_->span(addr_.avail + 4 + 2 * uint64_t(addr_.size), 2).value().data());
        return static_cast<uint16_t>(now - used_event - 1) < static_cast<uint16_t>(now - old);
    }
    const uint16_t flags = load_acquire16(mem_->span(addr_.avail, 2).value().data());
    return !(flags & vring::kAvailNoInterrupt);
}

void Virtqueue::disable_notifications()
{
    if (!notifications_) return;
    notifications_ = false;
    // With event index the stale avail_event already keeps the driver quiet
    // once it has passed it; without, say so in the used ring's flags.
    if (!event_idx_) {
        auto flags = mem_->span(addr_.used, 2).value();
        store_release16(flags.data(), vring::kUsedNoNotify);
        mem_->mark_dirty(flags);
    }
}

bool Virtqueue::enable_notifications()
{
    notifications_ = true;
    auto field = event_idx_ ? mem_->span(addr_.used + 4 + 8 * uint64_t(addr_.size), 2).value()
                            : mem_->span(addr_.used, 2).value();
    store_release16(field.data(), event_idx_ ? last_avail_ : uint16_t{0});
    mem_->mark_dirty(field);
    // The driver may have added a buffer before it could see the change:
    // order our store before reading its index, and look again.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return has_available();
}

bool ChainReader::read(std::span<uint8_t> out)
{
    std::vector<std::span<uint8_t>> parts;
    if (!take_readable(out.size(), parts)) return false;
    size_t at = 0;
    for (auto p : parts) {
        std::memcpy(out.data() + at, p.data(), p.size());
        at += p.size();
    }
    return true;
}

uint64_t ChainReader::remaining_readable() const
{
    uint64_t total = 0;
    for (size_t i = seg_; i < chain_.segments.size() && !chain_.segments[i].device_writable; ++i) total += chain_.segments[i].len;
    return total - off_;
}

bool ChainReader::take_readable(uint64_t len, std::vector<std::span<uint8_t>>& out)
{
    if (len > remaining_readable()) return false;
    take_spans(mem_, chain_, seg_, off_, len, out);
    return true;
}

ChainWriter::ChainWriter(const vmm::GuestMemory& mem, const DescriptorChain& chain) : mem_(mem), chain_(chain)
{
    while (seg_ < chain_.segments.size() && !chain_.segments[seg_].device_writable) ++seg_;
}

uint64_t ChainWriter::remaining_writable() const
{
    uint64_t total = 0;
    for (size_t i = seg_; i < chain_.segments.size(); ++i) total += chain_.segments[i].len;
    return total - off_;
}

bool ChainWriter::take_writable(uint64_t len, std::vector<std::span<uint8_t>>& out)
{
    if (len > remaining_writable()) return false;
    written_ += len;
    take_spans(mem_, chain_, seg_, off_, len, out);
    return true;
}

bool ChainWriter::write(std::span<const uint8_t> in)
{
    std::vector<std::span<uint8_t>> parts;
    if (!take_writable(in.size(), parts)) return false;
    size_t at = 0;
    for (auto p : parts) {
        std::memcpy(p.data(), in.data() + at, p.size());
        mem_.mark_dirty(p);
        at += p.size();
    }
    return true;
}

}  // namespace vvmm::dev
