// Writes memory.img: guest pages at their guest-physical offsets, zero
// pages left as holes, through the checkpoint thread's own io_uring ring
// with several 2 MiB writes in flight and O_DIRECT where the file system
// allows it.
//
// Work is split in two so a copy-on-write fault costs the guest only a
// memcpy: copy() (any thread) takes a snapshot of a chunk's pages into a
// pool buffer; submit() (checkpoint thread) hashes it, finds zero pages and
// queues the writes. Checksums are per page, folded per 2 MiB chunk at
// finish(), so a chunk may be written more than once (live mode) and the
// result still describes the file's final content.
#pragma once

#include <liburing.h>

#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/image_format.hpp"
#include "vmm/base/bitmap.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::ckpt {

inline constexpr unsigned kReservedBuffers = 4;

// The 2 MiB chunk of guest-physical memory a host address falls in.
inline std::optional<uint64_t> chunk_of_host(const vmm::GuestMemory& memory, uint64_t host_addr)
{
    const auto gpa = memory.gpa_of_host(host_addr);
    return gpa ? std::optional<uint64_t>(*gpa / (2ull << 20)) : std::nullopt;
}

struct ChunkCopy {
    uint64_t chunk = 0;
    uint64_t mask[kPagesPerChunk / 64] = {};  // pages of the chunk that belong to the image
    uint8_t* data = nullptr;                   // pool buffer (2 MiB, page-aligned)
    unsigned buffer = 0;
};

struct MemoryImageSummary {
    uint64_t bytes_written = 0;  // data pages written (zero pages excluded)
    uint64_t pages = 0;          // pages in the image (zero ones included)
    std::vector<std::optional<uint64_t>> chunk_hashes;
    Bitmap page_map;  // pages in the image
};

class MemoryImageWriter {
public:
    static Result<std::unique_ptr<MemoryImageWriter>> create(const std::string& path, uint64_t image_size,
                                                             unsigned buffers = 16, unsigned queue_depth = 32);
    ~MemoryImageWriter();

    // Any thread: copies the pages of `mask` from `src` (the chunk's first
    // byte in guest memory). Blocks while every buffer is in use.
    ChunkCopy copy(uint64_t chunk, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64]);
    // Checkpoint thread: as copy(), but reaps completions while waiting, and
    // leaves kReservedBuffers free for copy() so a guest blocked on a
    // copy-on-write fault never waits for a disk write.
    // `while_waiting` runs before each wait: buffers may be held by copies
    // the caller has yet to submit (the fault thread's), and only it can.
    Result<ChunkCopy> copy_here(uint64_t chunk, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64],
                                const std::function<Result<void>()>& while_waiting = {});
    // Checkpoint thread only.
    Result<void> submit(const ChunkCopy& c);
    // The pages of `mask` in `chunk` are known to be zero (never touched):
    // they belong to the image as holes, nothing is copied or written.
    void add_zero(uint64_t chunk, const uint64_t (&mask)[kPagesPerChunk / 64]);
    Result<void> reap(bool wait);
    // Waits for every write submitted so far. A page written again (a live
    // round re-copies what the guest dirtied) must not be in flight twice:
    // io_uring may complete two writes of one range in either order.
    Result<void> drain();
    // Waits for every write, makes the file durable, folds the checksums.
    Result<MemoryImageSummary> finish();
    bool direct_io() const { return direct_; }

private:
    MemoryImageWriter() = default;
    unsigned take_buffer_locked(std::unique_lock<std::mutex>& lock);
    ChunkCopy fill(unsigned buffer, uint64_t chunk, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64]);
    void release_buffer(unsigned b);
    Result<void> queue_write(const uint8_t* data, uint64_t len, uint64_t offset, unsigned buffer);

    UniqueFd fd_;
    bool direct_ = false;
    io_uring ring_{};
    bool ring_ok_ = false;
    unsigned depth_ = 0, in_flight_ = 0;
    uint64_t image_size_ = 0;
    uint8_t* pool_ = nullptr;
    size_t pool_bytes_ = 0;

    std::mutex pool_mutex_;
    std::condition_variable pool_cv_;
    std::vector<unsigned> free_;
    std::vector<unsigned> pending_writes_;  // per buffer

    std::vector<uint64_t> page_hash_;  // per page of the image; 0 = not in the image
    Bitmap page_map_;
    uint64_t bytes_written_ = 0;
    std::optional<Error> write_error_;
};

}  // namespace vvmm::ckpt
