// Copy-on-write capture of guest memory for `--mode cow`: while the VM is
// paused, the chunks to save are write-protected with userfaultfd; the VM
// resumes; the checkpoint thread then copies chunk after chunk (and lifts
// the protection of each), while a fault thread copies first any chunk the
// guest (or a device) is about to write. Either way a chunk is copied once,
// with the content it had at the pause.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "ckpt/memory_image_writer.hpp"
#include "ckpt/userfault.hpp"
#include "vmm/base/bitmap.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::ckpt {

class CowCapture {
public:
    // Call while the VM is paused.
    // Chunks not in `touched` are zero at the pause: recorded as such, not protected.
    static Result<std::unique_ptr<CowCapture>> start(const vmm::GuestMemory& memory, const Bitmap& pages,
                                                     const std::vector<bool>& touched, MemoryImageWriter& writer);
    ~CowCapture();
    // Checkpoint thread, VM running: saves every chunk, returns when all are
    // queued for writing and the protection is gone.
    Result<void> run();
    double longest_stall_ms() const { return longest_stall_us_.load() / 1000.0; }

private:
    CowCapture(const vmm::GuestMemory& memory, const Bitmap& pages, MemoryImageWriter& writer, Userfault uffd);
    void mask_of(uint64_t chunk, uint64_t (&mask)[kPagesPerChunk / 64]) const;
    bool claim(uint64_t chunk);
    Result<void> release(uint64_t chunk);
    void fault_loop();
    void unregister_all();

    const vmm::GuestMemory& memory_;
    const Bitmap& pages_;
    MemoryImageWriter& writer_;
    Userfault uffd_;
    uint64_t chunks_ = 0;
    std::unique_ptr<std::atomic<uint8_t>[]> claimed_;  // per chunk: someone copies it

    std::mutex ready_mutex_;
    std::condition_variable ready_cv_;
    std::deque<ChunkCopy> ready_;  // copied by the fault thread, to be written
    std::optional<Error> fault_error_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> fault_busy_{false};  // the fault thread holds or waits for a buffer
    std::atomic<uint64_t> longest_stall_us_{0};
    std::thread fault_thread_;
};

}  // namespace vvmm::ckpt
