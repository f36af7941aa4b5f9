#include "ckpt/cow_capture.hpp"

#include <chrono>

#include "ckpt/manifest.hpp"

namespace vvmm::ckpt {

CowCapture::CowCapture(const vmm::GuestMemory& memory, const Bitmap& pages, MemoryImageWriter& writer, Userfault uffd)
    : memory_(memory), pages_(pages), writer_(writer), uffd_(std::move(uffd)), chunks_(pages.size() / kPagesPerChunk),
      claimed_(std::make_unique<std::atomic<uint8_t>[]>(chunks_))
{
}

Result<std::unique_ptr<CowCapture>> CowCapture::start(const vmm::GuestMemory& memory, const Bitmap& pages,
                                                      const std::vector<bool>& touched, MemoryImageWriter& writer)
{
    // Pages the guest never touched must be protected too (they are zero at
    // the pause but may not be later). Guest RAM is shmem or hugetlbfs, where
    // write-protecting an unpopulated page leaves a PTE marker (Linux 5.19+,
    // which WP_HUGETLBFS_SHMEM implies); WP_UNPOPULATED (6.4) only extends
    // that to anonymous memory, so Debian 12's 6.1 needs nothing more.
    TRY_ASSIGN(auto uffd, Userfault::create(UFFD_FEATURE_WP_HUGETLBFS_SHMEM));
    std::unique_ptr<CowCapture> c(new CowCapture(memory, pages, writer, std::move(uffd)));
    for (const auto& r : memory.regions())
        if (auto reg = c->uffd_.register_range(memory.host_base() + r.file_offset, r.size, UffdMode::wp); !reg) {
            c->unregister_all();
            return reg.error().context("userfaultfd write-protect");
        }
    // Protect runs of chunks that hold pages of this checkpoint.
    auto wanted = [&](uint64_t chunk) {
        return pages.any_in(chunk * kPagesPerChunk, kPagesPerChunk) && memory.host_page(chunk * kChunkSize) &&
               (chunk >= touched.size() || touched[chunk]);
    };
    uint64_t c0 = 0;
    while (c0 < c->chunks_) {
        if (!wanted(c0)) {
            c->claimed_[c0] = 1;  // nothing to save, or known zero
            if (pages.any_in(c0 * kPagesPerChunk, kPagesPerChunk) && memory.host_page(c0 * kChunkSize)) {
                uint64_t mask[kPagesPerChunk / 64];
                c->mask_of(c0, mask);
                writer.add_zero(c0, mask);
            }
            ++c0;
            continue;
        }
        uint64_t c1 = c0 + 1;
        while (c1 < c->chunks_ && wanted(c1) &&
               memory.host_page(c1 * kChunkSize) == memory.host_page(c0 * kChunkSize) + (c1 - c0) * kChunkSize)
            ++c1;
        if (auto r = c->uffd_.write_protect(memory.host_page(c0 * kChunkSize), (c1 - c0) * kChunkSize, true); !r) {
            c->unregister_all();
            return r.error().context("userfaultfd write-protect");
        }
        c0 = c1;
    }
    c->fault_thread_ = std::thread([p = c.get()] { p->fault_loop(); });
    return c;
}

CowCapture::~CowCapture()
{
    stop_ = true;
    if (fault_thread_.joinable()) fault_thread_.join();
    unregister_all();
}

void CowCapture::unregister_all()
{
    for (const auto& r : memory_.regions()) (void)uffd_.unregister(memory_.host_base() + r.file_offset, r.size);
}

void CowCapture::mask_of(uint64_t chunk, uint64_t (&mask)[kPagesPerChunk / 64]) const
{
    for (unsigned w = 0; w < kPagesPerChunk / 64; ++w) mask[w] = pages_.words()[chunk * 8 + w];
}

bool CowCapture::claim(uint64_t chunk)
{
    uint8_t expected = 0;
    return claimed_[chunk].compare_exchange_strong(expected, 1);
}

Result<void> CowCapture::release(uint64_t chunk)
{
    return uffd_.write_protect(memory_.host_page(chunk * kChunkSize), kChunkSize, false);
}

void CowCapture::fault_loop()
{
    uffd_msg msgs[16];
    while (!stop_) {
        auto n = uffd_.read_events(msgs, 20);
        if (!n) {
            std::lock_guard lock(ready_mutex_);
            fault_error_ = n.error();
            return;
        }
        for (size_t i = 0; i < n.value(); ++i) {
            const auto fault = describe_event(msgs[i]);
            if (!fault || !fault->wp) continue;
            const auto t0 = std::chrono::steady_clock::now();
            const auto chunk = chunk_of_host(memory_, fault->address);
            // The checkpoint thread may own this chunk: its release() wakes us.
            if (!chunk || *chunk >= chunks_) continue;
            fault_busy_ = true;  // before the claim: see run()
            if (!claim(*chunk)) {
                fault_busy_ = false;
                continue;
            }
            uint64_t mask[kPagesPerChunk / 64];
            mask_of(*chunk, mask);
            ChunkCopy copy = writer_.copy(*chunk, memory_.host_page(*chunk * kChunkSize), mask);
            auto r = release(*chunk);
            const auto us = static_cast<uint64_t>(
                std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0).count());
            uint64_t prev = longest_stall_us_.load();
            while (us > prev && !longest_stall_us_.compare_exchange_weak(prev, us)) {
            }
            std::lock_guard lock(ready_mutex_);
            if (!r) fault_error_ = r.error();
            ready_.push_back(copy);
            fault_busy_ = false;
            ready_cv_.notify_all();
        }
    }
}

Result<void> CowCapture::run()
{
    auto submit_ready = [&]() -> Result<void> {
        std::deque<ChunkCopy> batch;
        {
            std::lock_guard lock(ready_mutex_);
            if (fault_error_) return *fault_error_;
            batch.swap(ready_);
        }
        for (const auto& c : batch) TRY(writer_.submit(c));
        return ok();
    };
    for (uint64_t c = 0; c < chunks_; ++c) {
        TRY(submit_ready());
        if (!claim(c)) continue;
        uint64_t mask[kPagesPerChunk / 64];
        mask_of(c, mask);
        TRY_ASSIGN(auto copy, writer_.copy_here(c, memory_.host_page(c * kChunkSize), mask, submit_ready));
        TRY(release(c));
        TRY(writer_.submit(copy));
    }
    // Every chunk is claimed; the fault thread may still be copying one, and
    // only this thread's reaping frees the buffer it may wait for.
    while (fault_busy_) {
        TRY(writer_.reap(false));
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    stop_ = true;
    fault_thread_.join();
    TRY(submit_ready());
    unregister_all();
    return ok();
}

}  // namespace vvmm::ckpt
