#include "ckpt/image_delta.hpp"

#include <cstring>

#include "ckpt/checkpoint_dir.hpp"

namespace vvmm::ckpt {
namespace {

// Flushes the pending run of changed pages through `send`.
struct RunBuffer {
    size_t max_run;
    const std::function<Result<void>(uint64_t, std::span<const uint8_t>)>& send;
    std::vector<uint8_t> bytes;
    uint64_t offset = 0;

    Result<void> add(uint64_t at, const uint8_t* delta)
    {
        if (!bytes.empty() && (offset + bytes.size() != at || bytes.size() + kPageSize > max_run)) TRY(flush());
        if (bytes.empty()) offset = at;
        bytes.insert(bytes.end(), delta, delta + kPageSize);
        return ok();
    }
    Result<void> flush()
    {
        if (bytes.empty()) return ok();
        TRY(send(offset, bytes));
        bytes.clear();
        return ok();
    }
};

}  // namespace

Result<DeltaStats> image_delta(ProtectedImage& current, ProtectedImage* base, const std::vector<uint64_t>* base_hashes,
                               size_t max_run, const std::function<Result<void>(uint64_t, std::span<const uint8_t>)>& send)
{
    if (max_run < kPageSize) return Error("a delta run must hold at least one page");
    const std::vector<bool> changed =
        base ? current.chunks_changed_since(base->id()) : std::vector<bool>(current.chunks(), true);
    DeltaStats stats;
    RunBuffer run{max_run / kPageSize * kPageSize, send, {}, 0};
    std::vector<uint8_t> delta(kPageSize);
    for (uint64_t c = 0; c < current.chunks(); ++c) {
        if (!changed[c]) {
            if (!base_hashes || c >= base_hashes->size())
                return Error("chunk " + std::to_string(c) + " is unchanged but the base's checksum is not known");
            stats.chunk_xxh3.push_back((*base_hashes)[c]);
            continue;
        }
        TRY_ASSIGN(const auto now, current.read_chunk(c));
        stats.chunk_xxh3.push_back(digest_of(now));
        std::vector<uint8_t> old;
        if (base && c < base->chunks()) {
            TRY_ASSIGN(old, base->read_chunk(c));
        }
        for (size_t at = 0; at < now.size(); at += kPageSize) {
            ++stats.pages_compared;
            const size_t len = std::min<size_t>(kPageSize, now.size() - at);
            const uint8_t* before = at < old.size() ? old.data() + at : nullptr;
            bool differs = false;
            for (size_t i = 0; i < kPageSize; ++i) {
                const uint8_t n = i < len ? now[at + i] : 0;
                const uint8_t o = before && at + i < old.size() ? before[i] : 0;
                delta[i] = n ^ o;
                differs |= delta[i] != 0;
            }
            if (!differs) continue;
            ++stats.pages_sent;
            stats.bytes_sent += kPageSize;
            TRY(run.add(c * kChunkSize + at, delta.data()));
        }
    }
    // Pages the base had past the current image's end go back to zero.
    if (base)
        for (uint64_t c = current.chunks(); c < base->chunks(); ++c) {
            TRY_ASSIGN(const auto old, base->read_chunk(c));
            for (size_t at = 0; at < old.size(); at += kPageSize) {
                const size_t len = std::min<size_t>(kPageSize, old.size() - at);
                std::memset(delta.data(), 0, kPageSize);
                std::memcpy(delta.data(), old.data() + at, len);
                bool differs = false;
                for (uint8_t b : delta) differs |= b != 0;
                if (!differs) continue;
                ++stats.pages_sent;
                stats.bytes_sent += kPageSize;
                TRY(run.add(c * kChunkSize + at, delta.data()));
            }
        }
    TRY(run.flush());
    return stats;
}

}  // namespace vvmm::ckpt
