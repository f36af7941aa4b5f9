#include "ckpt/memory_image_writer.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "ckpt/manifest.hpp"
#include "ckpt/memory_hash.hpp"

namespace vvmm::ckpt {

Result<std::unique_ptr<MemoryImageWriter>> MemoryImageWriter::create(const std::string& path, uint64_t image_size,
                                                                    unsigned buffers, unsigned queue_depth)
{
    std::unique_ptr<MemoryImageWriter> w(new MemoryImageWriter());
    // Create first, then ask for O_DIRECT: a file system without it (tmpfs
    // before Linux 6.6, ramfs) creates the file and only then refuses the
    // open, so O_CREAT|O_EXCL|O_DIRECT cannot simply be retried without it.
    w->fd_ = UniqueFd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!w->fd_.valid()) return errno_error("creating " + path);
    const int fl = ::fcntl(w->fd_.get(), F_GETFL);
    w->direct_ = fl >= 0 && ::fcntl(w->fd_.get(), F_SETFL, fl | O_DIRECT) == 0;
    if (::ftruncate(w->fd_.get(), static_cast<off_t>(image_size)) < 0) return errno_error("sizing " + path);
    if (int r = io_uring_queue_init(queue_depth, &w->ring_, 0); r < 0) return errno_error("io_uring_queue_init", -r);
    w->ring_ok_ = true;
    w->depth_ = queue_depth;
    w->image_size_ = image_size;
    buffers = std::max(buffers, kReservedBuffers + 2);
    w->pool_bytes_ = static_cast<size_t>(buffers) * kChunkSize;
    void* p = ::mmap(nullptr, w->pool_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return errno_error("allocating checkpoint buffers");
    w->pool_ = static_cast<uint8_t*>(p);
    w->pending_writes_.assign(buffers, 0);
    for (unsigned b = 0; b < buffers; ++b) w->free_.push_back(b);
    w->page_hash_.assign(image_size / kPageSize, 0);
    w->page_map_ = Bitmap(image_size / kPageSize);
    return w;
}

MemoryImageWriter::~MemoryImageWriter()
{
    if (ring_ok_) {
        while (in_flight_ > 0 && reap(true).ok()) {
        }
        io_uring_queue_exit(&ring_);
    }
    if (pool_) ::munmap(pool_, pool_bytes_);
}

unsigned MemoryImageWriter::take_buffer_locked(std::unique_lock<std::mutex>&)
{
    const unsigned b = free_.back();
    free_.pop_back();
    return b;
}

void MemoryImageWriter::release_buffer(unsigned b)
{
    {
        std::lock_guard lock(pool_mutex_);
        free_.push_back(b);
    }
    pool_cv_.notify_all();
}

static void copy_pages(uint8_t* dst, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64])
{
    // Runs of wanted pages as one memcpy each (a full chunk is one copy).
    uint64_t p = 0;
    while (p < kPagesPerChunk) {
        if (!((mask[p / 64] >> (p % 64)) & 1)) {
            ++p;
            continue;
        }
        uint64_t end = p;
        while (end < kPagesPerChunk && ((mask[end / 64] >> (end % 64)) & 1)) ++end;
        std::memcpy(dst + p * kPageSize, src + p * kPageSize, (end - p) * kPageSize);
        p = end;
    }
}

ChunkCopy MemoryImageWriter::copy(uint64_t chunk, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64])
{
    unsigned buffer;
    {
        std::unique_lock lock(pool_mutex_);
        pool_cv_.wait(lock, [&] { return !free_.empty(); });
        buffer = take_buffer_locked(lock);
    }
    return fill(buffer, chunk, src, mask);
}

ChunkCopy MemoryImageWriter::fill(unsigned buffer, uint64_t chunk, const uint8_t* src,
                                  const uint64_t (&mask)[kPagesPerChunk / 64])
{
    ChunkCopy c;
    c.buffer = buffer;
    c.chunk = chunk;
    std::memcpy(c.mask, mask, sizeof c.mask);
    c.data = pool_ + static_cast<size_t>(c.buffer) * kChunkSize;
    copy_pages(c.data, src, mask);
    return c;
}

Result<ChunkCopy> MemoryImageWriter::copy_here(uint64_t chunk, const uint8_t* src, const uint64_t (&mask)[kPagesPerChunk / 64],
                                               const std::function<Result<void>()>& while_waiting)
{
    for (;;) {
        {
            std::unique_lock lock(pool_mutex_);
            if (free_.size() > kReservedBuffers) {
                const unsigned buffer = take_buffer_locked(lock);
                lock.unlock();
                return fill(buffer, chunk, src, mask);
            }
        }
        if (while_waiting) TRY(while_waiting());
        if (in_flight_ > 0) TRY(reap(true));
        else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
}

Result<void> MemoryImageWriter::queue_write(const uint8_t* data, uint64_t len, uint64_t offset, unsigned buffer)
{
    while (in_flight_ >= depth_) TRY(reap(true));
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
        if (!sqe) return Error("io_uring: no submission entry");
    }
    io_uring_prep_write(sqe, fd_.get(), data, static_cast<unsigned>(len), offset);
    // user_data: buffer index and length, so a short write is detected.
    io_uring_sqe_set_data64(sqe, (static_cast<uint64_t>(buffer) << 32) | len);
    ++in_flight_;
    ++pending_writes_[buffer];
    return ok();
}

Result<void> MemoryImageWriter::submit(const ChunkCopy& c)
{
    const uint64_t first_page = c.chunk * kPagesPerChunk;
    // Held while this chunk's runs are queued: queueing may reap completions
    // of its first runs, and the buffer must not go back to the pool (and be
    // refilled) while later runs still read from it.
    ++pending_writes_[c.buffer];
    uint64_t run_start = 0, run_len = 0;
    bool queued = false;
    auto flush_run = [&]() -> Result<void> {
        if (run_len == 0) return ok();
        TRY(queue_write(c.data + run_start * kPageSize, run_len * kPageSize, (first_page + run_start) * kPageSize, c.buffer));
        bytes_written_ += run_len * kPageSize;
        queued = true;
        run_len = 0;
        return ok();
    };
    std::vector<uint64_t> now_zero;  // pages that held data in an earlier write
    for (uint64_t p = 0; p < kPagesPerChunk; ++p) {
        const bool wanted = (c.mask[p / 64] >> (p % 64)) & 1;
        const uint8_t* page = c.data + p * kPageSize;
        const bool zero = wanted && page_is_zero(page);
        if (wanted) {
            uint64_t& h = page_hash_[first_page + p];
            if (zero && h != 0 && h != zero_page_hash()) now_zero.push_back(first_page + p);
            h = zero ? zero_page_hash() : page_hash(page);
            page_map_.set(first_page + p);
        }
        if (wanted && !zero) {
            if (run_len == 0) run_start = p;
            ++run_len;
        } else {
            TRY(flush_run());
        }
    }
    TRY(flush_run());
    // A page that was data before and is zero now (live mode rewrote it)
    // must become a hole again.
    for (uint64_t page : now_zero)
        if (::fallocate(fd_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(page * kPageSize),
                        kPageSize) < 0)
            return errno_error("punching a hole in memory.img");
    if (queued) io_uring_submit(&ring_);
    if (--pending_writes_[c.buffer] == 0) release_buffer(c.buffer);
    return ok();
}

void MemoryImageWriter::add_zero(uint64_t chunk, const uint64_t (&mask)[kPagesPerChunk / 64])
{
    for (uint64_t p = 0; p < kPagesPerChunk; ++p) {
        if (!((mask[p / 64] >> (p % 64)) & 1)) continue;
        page_hash_[chunk * kPagesPerChunk + p] = zero_page_hash();
        page_map_.set(chunk * kPagesPerChunk + p);
    }
}

Result<void> MemoryImageWriter::reap(bool wait)
{
    if (in_flight_ == 0) return ok();
    // in_flight_ counts writes queued but not yet submitted too (a chunk of
    // scattered data pages queues more runs than the ring is deep): waiting
    // for a completion of a write the kernel never saw would wait for ever.
    if (wait) io_uring_submit(&ring_);
    io_uring_cqe* cqe = nullptr;
    int r = wait ? io_uring_wait_cqe(&ring_, &cqe) : io_uring_peek_cqe(&ring_, &cqe);
    while (r == 0 && cqe) {
        const uint64_t data = io_uring_cqe_get_data64(cqe);
        const unsigned buffer = static_cast<unsigned>(data >> 32);
        const uint64_t len = data & 0xffffffffu;
        if (cqe->res < 0) write_error_ = errno_error("writing memory.img", -cqe->res);
        else if (static_cast<uint64_t>(cqe->res) != len) write_error_ = Error("writing memory.img: short write (disk full?)");
        io_uring_cqe_seen(&ring_, cqe);
        --in_flight_;
        if (--pending_writes_[buffer] == 0) release_buffer(buffer);
        cqe = nullptr;
        r = io_uring_peek_cqe(&ring_, &cqe);
    }
    if (r < 0 && r != -EAGAIN && r != -EINTR) return errno_error("io_uring wait", -r);
    if (write_error_) return *write_error_;
    return ok();
}

Result<void> MemoryImageWriter::drain()
{
    io_uring_submit(&ring_);
    while (in_flight_ > 0) TRY(reap(true));
    if (write_error_) return *write_error_;
    return ok();
}

Result<MemoryImageSummary> MemoryImageWriter::finish()
{
    TRY(drain());
    if (::fdatasync(fd_.get()) < 0) return errno_error("fsync memory.img");
    MemoryImageSummary s;
    s.bytes_written = bytes_written_;
    s.pages = page_map_.count();
    s.chunk_hashes = fold_chunk_hashes(page_hash_, page_map_);
    s.page_map = std::move(page_map_);
    return s;
}

}  // namespace vvmm::ckpt
