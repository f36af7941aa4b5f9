// Fuzz build only: vmm::IoThread without io_uring or a thread (see
// fuzz_platform.hpp). Everything the devices hand it waits until pump().
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <deque>

#include "fuzz/support/fuzz_platform.hpp"

namespace vvmm::fuzz {
namespace {

struct Op {
    IoKind kind;
    int fd;
    const iovec* iov;
    unsigned count;
    uint64_t offset;
    vmm::IoThread::Completion done;
};

struct Watch {
    int fd;
    std::function<void()> handler;
};

struct FakeIo {
    std::vector<Watch> watches;
    std::deque<std::function<void()>> tasks;
    std::deque<Op> ops;
};

std::map<const vmm::IoThread*, FakeIo>& threads()
{
    static std::map<const vmm::IoThread*, FakeIo> m;
    return m;
}

FakeIo& state(const vmm::IoThread* t)
{
    auto it = threads().find(t);
    check(it != threads().end(), "use of an IoThread that does not exist");
    return it->second;
}

IoCheck& io_check()
{
    static IoCheck c;
    return c;
}

std::function<uint8_t()>& io_chooser()
{
    static std::function<uint8_t()> c;
    return c;
}

void run_op(Op op, bool fail)
{
    if (io_check()) io_check()(op.kind, op.fd, op.iov, op.count, op.offset);
    int res;
    if (fail) {
        res = -EIO;
    } else {
        ssize_t n = 0;
        switch (op.kind) {
        case IoKind::read: n = ::preadv(op.fd, op.iov, static_cast<int>(op.count), static_cast<off_t>(op.offset)); break;
        case IoKind::write: n = ::pwritev(op.fd, op.iov, static_cast<int>(op.count), static_cast<off_t>(op.offset)); break;
        case IoKind::fsync: n = ::fdatasync(op.fd); break;
        }
        res = n < 0 ? -errno : static_cast<int>(n);
        // These mean the device handed the kernel a bad request, not that the disk failed.
        check(res != -EBADF && res != -EFAULT && res != -EINVAL, "a disk I/O the kernel refuses as malformed");
    }
    op.done(res);
}

}  // namespace

void set_io_check(IoCheck c) { io_check() = std::move(c); }
void set_io_chooser(std::function<uint8_t()> c) { io_chooser() = std::move(c); }

size_t queued_io(const vmm::IoThread& io) { return state(&io).ops.size(); }

size_t pump(vmm::IoThread& io, size_t max_io)
{
    constexpr size_t kMaxSteps = 1'000'000;
    size_t steps = 0;
    for (;; ++steps) {
        check(steps < kMaxSteps, "the I/O thread never goes idle");
        FakeIo& s = state(&io);
        bool progress = false;
        for (size_t i = 0; i < s.watches.size(); ++i) {
            uint64_t v;
            if (::read(s.watches[i].fd, &v, sizeof v) == sizeof v) {
                progress = true;
                s.watches[i].handler();
            }
        }
        while (!s.tasks.empty()) {
            auto task = std::move(s.tasks.front());
            s.tasks.pop_front();
            progress = true;
            task();
        }
        if (!s.ops.empty() && max_io > 0) {
            --max_io;
            progress = true;
            const uint8_t pick = io_chooser() ? io_chooser()() : 0;
            const size_t i = pick % s.ops.size();
            Op op = std::move(s.ops[i]);
            s.ops.erase(s.ops.begin() + static_cast<ptrdiff_t>(i));
            run_op(std::move(op), pick & 0x80);
        }
        if (!progress) return steps;
    }
}

}  // namespace vvmm::fuzz

namespace vvmm::vmm {

Result<std::unique_ptr<IoThread>> IoThread::create(unsigned)
{
    std::unique_ptr<IoThread> t(new IoThread());
    fuzz::threads()[t.get()];
    return t;
}

IoThread::~IoThread() { fuzz::threads().erase(this); }

void IoThread::watch_eventfd(int eventfd, std::function<void()> handler)
{
    fuzz::state(this).watches.push_back({eventfd, std::move(handler)});
}

void IoThread::post(std::function<void()> task) { fuzz::state(this).tasks.push_back(std::move(task)); }

void IoThread::readv(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done)
{
    fuzz::state(this).ops.push_back({fuzz::IoKind::read, fd, iov, count, offset, std::move(done)});
}

void IoThread::writev(int fd, const iovec* iov, unsigned count, uint64_t offset, Completion done)
{
    fuzz::state(this).ops.push_back({fuzz::IoKind::write, fd, iov, count, offset, std::move(done)});
}

void IoThread::fsync(int fd, Completion done)
{
    fuzz::state(this).ops.push_back({fuzz::IoKind::fsync, fd, nullptr, 0, 0, std::move(done)});
}

void IoThread::start() {}
void IoThread::stop() {}

}  // namespace vvmm::vmm
