// The VMM's I/O thread: one io_uring ring that waits on eventfds (guest
// queue kicks via ioeventfd, wake-ups from other threads) and runs disk
// requests, so a disk request never blocks a vCPU. Every callback runs on
// this thread.
#pragma once

#include <liburing.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <sys/uio.h>
#include <thread>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::vmm {

class IoThread {
public:
    using Completion = std::function<void(int result)>;  // >= 0 bytes, < 0 -errno

    static Result<std::unique_ptr<IoThread>> create(unsigned entries = 256);
    ~IoThread();

    // Calls `handler` on the I/O thread each time `eventfd` is signalled.
    // Call before start().
    void watch_eventfd(int eventfd, std::function<void()> handler);
    // Runs `task` on the I/O thread soon (thread-safe).
    void post(std::function<void()> task);

    // I/O thread only: queue a request; it is submitted when the current
    // callback returns. `iov` must stay valid until `done` runs.
    void readv(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done);
    void writev(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done);
    void fsync(int fd, Completion done);

    void start();
    void stop();
    bool on_io_thread() const { return std::this_thread::get_id() == thread_.get_id(); }

private:
    struct Watch {
        int fd;
        std::function<void()> handler;
        uint64_t buffer;
    };
    struct Op {
        Completion done;
        Watch* watch = nullptr;  // set for eventfd reads
    };

    IoThread() = default;
    void loop();
    io_uring_sqe* next_sqe();
    void arm(Watch& w);
    void run_posted();

    io_uring ring_{};
    bool ring_ready_ = false;
    UniqueFd wake_fd_;
    std::vector<std::unique_ptr<Watch>> watches_;
    std::mutex posted_mutex_;
    std::vector<std::function<void()>> posted_;
    std::atomic<bool> stopping_{false};
    std::thread thread_;
};

}  // namespace vvmm::vmm
