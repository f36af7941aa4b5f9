#include "ckpt/image_delta.hpp"

#include <cstring>

#include "ckpt/checkpoint_dir.hpp"

namespace vvmm::ckpt {
namespace {

using Send = std::function<Result<void>(uint64_t, std::span<const uint8_t>)>;

// Collects changed pages into runs of adjacent pages and flushes each
// through `send`.
class RunBuffer {
public:
    RunBuffer(size_t max_run, const Send& send, DeltaStats& stats) : max_run_(max_run), send_(send), stats_(stats) {}

    Result<void> add(uint64_t at, const uint8_t* delta)
    {
        if (!bytes_.empty() && (offset_ + bytes_.size() != at || bytes_.size() + kPageSize > max_run_)) TRY(flush());
        if (bytes_.empty()) offset_ = at;
        bytes_.insert(bytes_.end(), delta, delta + kPageSize);
        ++stats_.pages_sent;
        stats_.bytes_sent += kPageSize;
        return ok();
    }
    Result<void> flush()
    {
        if (bytes_.empty()) return ok();
        TRY(send_(offset_, bytes_));
        bytes_.clear();
        return ok();
    }

private:
    size_t max_run_;
    const Send& send_;
    DeltaStats& stats_;
    std::vector<uint8_t> bytes_;
    uint64_t offset_ = 0;
};

// Adds old XOR new of every page of chunk `c` that differs (a shorter
// side reads as zeros past its end).
Result<void> add_chunk_delta(uint64_t c, std::span<const uint8_t> now, std::span<const uint8_t> old, RunBuffer& run,
                             DeltaStats& stats)
{
    std::vector<uint8_t> delta(kPageSize);
    const size_t len = std::max(now.size(), old.size());
    for (size_t at = 0; at < len; at += kPageSize) {
        ++stats.pages_compared;
        bool differs = false;
        for (size_t i = 0; i < kPageSize; ++i) {
            const uint8_t n = at + i < now.size() ? now[at + i] : 0;
            const uint8_t o = at + i < old.size() ? old[at + i] : 0;
            delta[i] = n ^ o;
            differs |= delta[i] != 0;
        }
        if (differs) TRY(run.add(c * kChunkSize + at, delta.data()));
    }
    return ok();
}

Result<std::vector<uint8_t>> base_chunk(ProtectedImage* base, uint64_t c)
{
    if (!base || c >= base->chunks()) return std::vector<uint8_t>();
    return base->read_chunk(c);
}

}  // namespace

Result<DeltaStats> image_delta(ProtectedImage& current, ProtectedImage* base, size_t max_run, const Send& send)
{
    if (max_run < kPageSize) return Error("a delta run must hold at least one page");
    if (base && (base->memory_hashes().size() != base->memory_chunks() || base->memory_bytes() != current.memory_bytes()))
        return Error("the base image has another memory size or no memory checksums");
    const std::vector<bool> changed =
        base ? current.chunks_changed_since(base->id()) : std::vector<bool>(current.chunks(), true);
    DeltaStats stats;
    RunBuffer run(max_run / kPageSize * kPageSize, send, stats);
    std::vector<uint64_t> hashes;
    for (uint64_t c = 0; c < current.memory_chunks(); ++c) {
        if (!changed[c]) {
            hashes.push_back(base->memory_hashes()[c]);
            continue;
        }
        TRY_ASSIGN(const auto now, current.read_chunk(c));
        hashes.push_back(digest_of(now));
        TRY_ASSIGN(const auto old, base_chunk(base, c));
        TRY(add_chunk_delta(c, now, old, run, stats));
    }
    TRY(current.set_memory_hashes(std::move(hashes)));
    // The checksums and the files: always compared. Pages the base had past
    // the current image's end go back to zero.
    const uint64_t end = std::max(current.chunks(), base ? base->chunks() : 0);
    for (uint64_t c = current.memory_chunks(); c < end; ++c) {
        std::vector<uint8_t> now;
        if (c < current.chunks()) {
            TRY_ASSIGN(now, current.read_chunk(c));
        }
        TRY_ASSIGN(const auto old, base_chunk(base, c));
        TRY(add_chunk_delta(c, now, old, run, stats));
    }
    TRY(run.flush());
    return stats;
}

}  // namespace vvmm::ckpt
