#include "vmm/io_thread.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include "vmm/base/log.hpp"

namespace vvmm::vmm {

Result<std::unique_ptr<IoThread>> IoThread::create(unsigned entries)
{
    std::unique_ptr<IoThread> t(new IoThread());
    const int r = io_uring_queue_init(entries, &t->ring_, 0);
    if (r < 0) return errno_error("io_uring_queue_init (is io_uring disabled on this host?)", -r);
    t->ring_ready_ = true;
    t->wake_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!t->wake_fd_.valid()) return errno_error("eventfd");
    t->watch_eventfd(t->wake_fd_.get(), [raw = t.get()] { raw->run_posted(); });
    return t;
}

IoThread::~IoThread()
{
    stop();
    if (ring_ready_) io_uring_queue_exit(&ring_);
}

void IoThread::watch_eventfd(int eventfd, std::function<void()> handler)
{
    watches_.push_back(std::make_unique<Watch>(Watch{eventfd, std::move(handler), 0}));
}

void IoThread::post(std::function<void()> task)
{
    {
        std::lock_guard lock(posted_mutex_);
        posted_.push_back(std::move(task));
    }
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_.get(), &one, sizeof one);
}

void IoThread::run_posted()
{
    std::vector<std::function<void()>> tasks;
    {
        std::lock_guard lock(posted_mutex_);
        tasks.swap(posted_);
    }
    for (auto& t : tasks) t();
}

io_uring_sqe* IoThread::next_sqe()
{
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (!sqe) {  // ring full: hand what we have to the kernel and retry
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
}

void IoThread::arm(Watch& w)
{
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_read(sqe, w.fd, &w.buffer, sizeof w.buffer, 0);
    io_uring_sqe_set_data(sqe, new Op{nullptr, &w});
}

void IoThread::readv(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done)
{
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_readv(sqe, fd, iov, count, offset);
    io_uring_sqe_set_data(sqe, new Op{std::move(done), nullptr});
}

void IoThread::writev(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done)
{
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_writev(sqe, fd, iov, count, offset);
    io_uring_sqe_set_data(sqe, new Op{std::move(done), nullptr});
}

void IoThread::fsync(int fd, Completion done)
{
    io_uring_sqe* sqe = next_sqe();
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    io_uring_sqe_set_data(sqe, new Op{std::move(done), nullptr});
}

void IoThread::start()
{
    thread_ = std::thread([this] { loop(); });
}

void IoThread::stop()
{
    if (!thread_.joinable()) return;
    stopping_ = true;
    post([] {});
    thread_.join();
}

void IoThread::loop()
{
    for (auto& w : watches_) arm(*w);
    while (!stopping_) {
        io_uring_submit(&ring_);
        io_uring_cqe* cqe = nullptr;
        const int r = io_uring_wait_cqe(&ring_, &cqe);
        if (r == -EINTR) continue;
        if (r < 0) {
            log_error(std::string("io_uring_wait_cqe: ") + strerror(-r));
            return;
        }
        // Drain every completion that is ready before submitting again.
        unsigned head;
        unsigned seen = 0;
        io_uring_for_each_cqe(&ring_, head, cqe)
        {
            ++seen;
            std::unique_ptr<Op> op(static_cast<Op*>(io_uring_cqe_get_data(cqe)));
            const int res = cqe->res;
            if (op->watch) {
                if (!stopping_) arm(*op->watch);
                op->watch->handler();
            } else {
                op->done(res);
            }
        }
        io_uring_cq_advance(&ring_, seen);
    }
}

}  // namespace vvmm::vmm
