#include "ckpt/userfault.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace vvmm::ckpt {
namespace {

constexpr uint64_t kPage = 4096;

struct FeatureName {
    uint64_t bit;
    const char* name;
};
constexpr FeatureName kFeatureNames[] = {
    {UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP"},
    {UFFD_FEATURE_EVENT_FORK, "EVENT_FORK"},
    {UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP"},
    {UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE"},
    {UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS"},
    {UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM"},
    {UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP"},
    {UFFD_FEATURE_SIGBUS, "SIGBUS"},
    {UFFD_FEATURE_THREAD_ID, "THREAD_ID"},
    {UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS"},
    {UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM"},
    {UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS"},
    {UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM"},
    {kUffdFeatureWpUnpopulated, "WP_UNPOPULATED"},
    {1ull << 14, "POISON"},
    {kUffdFeatureWpAsync, "WP_ASYNC"},
    {1ull << 16, "MOVE"},
};

// Kernel-mode faults must be reported (KVM touches guest memory from the
// kernel), so UFFD_USER_MODE_ONLY is never set. /dev/userfaultfd (5.11+) is
// gated by its file mode; the syscall needs CAP_SYS_PTRACE for kernel-mode
// faults when vm.unprivileged_userfaultfd is 0. We run as root, so both work.
Result<UniqueFd> open_uffd()
{
    const int flags = O_CLOEXEC | O_NONBLOCK;
    int dev_err = 0;
    UniqueFd dev(::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC));
    if (dev.valid()) {
        int fd = ::ioctl(dev.get(), USERFAULTFD_IOC_NEW, flags);
        if (fd >= 0) return UniqueFd(fd);
    }
    dev_err = errno;
    int fd = static_cast<int>(::syscall(SYS_userfaultfd, flags));
    if (fd >= 0) return UniqueFd(fd);
    return Error(std::string("cannot create a userfaultfd: /dev/userfaultfd: ") + std::strerror(dev_err) +
                 "; userfaultfd(2): " + std::strerror(errno) +
                 " (kernel-mode faults need root, CAP_SYS_PTRACE or access to /dev/userfaultfd)");
}

Result<uint64_t> handshake(int fd, uint64_t features)
{
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = features;
    if (::ioctl(fd, UFFDIO_API, &api) < 0) return errno_error("UFFDIO_API");
    return api.features;  // the kernel reports everything it offers
}

}  // namespace

std::string uffd_feature_names(uint64_t features)
{
    std::string out;
    for (const auto& f : kFeatureNames) {
        if (!(features & f.bit)) continue;
        if (!out.empty()) out += '|';
        out += f.name;
        features &= ~f.bit;
    }
    if (features) {
        if (!out.empty()) out += '|';
        out += "0x" + [&] {
            char buf[32];
            std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(features));
            return std::string(buf);
        }();
    }
    return out;
}

std::optional<UffdFault> describe_event(const uffd_msg& msg)
{
    if (msg.event != UFFD_EVENT_PAGEFAULT) return std::nullopt;
    UffdFault f;
    f.address = msg.arg.pagefault.address & ~(kPage - 1);
    f.write = msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE;
    f.wp = msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP;
    f.tid = msg.arg.pagefault.feat.ptid;
    return f;
}

Result<uint64_t> Userfault::available_features()
{
    TRY_ASSIGN(auto fd, open_uffd());
    return handshake(fd.get(), 0);
}

Result<Userfault> Userfault::create(uint64_t required, uint64_t optional)
{
    // One handshake per fd is allowed, so ask a throw-away fd first what this
    // kernel has: requesting an unknown bit would fail without saying which.
    TRY_ASSIGN(const uint64_t available, available_features());
    if (const uint64_t missing = required & ~available)
        return Error("this kernel's userfaultfd lacks " + uffd_feature_names(missing) +
                     " (has " + uffd_feature_names(available) + ")");
    const uint64_t wanted = required | (optional & available);
    TRY_ASSIGN(auto fd, open_uffd());
    if (auto r = handshake(fd.get(), wanted); !r)
        return r.error().context("requesting userfaultfd features " + uffd_feature_names(wanted));
    return Userfault(std::move(fd), wanted);
}

Result<uint64_t> Userfault::register_range(void* addr, uint64_t len, UffdMode mode)
{
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uint64_t>(addr);
    reg.range.len = len;
    reg.mode = static_cast<uint64_t>(mode);
    if (::ioctl(fd_.get(), UFFDIO_REGISTER, &reg) < 0) return errno_error("UFFDIO_REGISTER");
    return static_cast<uint64_t>(reg.ioctls);
}

Result<void> Userfault::unregister(void* addr, uint64_t len)
{
    uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
    if (::ioctl(fd_.get(), UFFDIO_UNREGISTER, &range) < 0) return errno_error("UFFDIO_UNREGISTER");
    return ok();
}

Result<void> Userfault::write_protect(void* addr, uint64_t len, bool on, bool wake_waiters)
{
    uffdio_writeprotect wp{};
    wp.range.start = reinterpret_cast<uint64_t>(addr);
    wp.range.len = len;
    // The kernel refuses WP|DONTWAKE: protecting never wakes anyone anyway.
    wp.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : (wake_waiters ? 0 : UFFDIO_WRITEPROTECT_MODE_DONTWAKE);
    while (::ioctl(fd_.get(), UFFDIO_WRITEPROTECT, &wp) < 0) {
        // EAGAIN: the mappings changed under us; the operation is idempotent.
        if (errno != EAGAIN) return errno_error(on ? "UFFDIO_WRITEPROTECT on" : "UFFDIO_WRITEPROTECT off");
    }
    return ok();
}

Result<uint64_t> Userfault::copy(void* dst, const void* src, uint64_t len, bool wp, bool wake_waiters)
{
    const auto d = reinterpret_cast<uint64_t>(dst);
    const auto s = reinterpret_cast<uint64_t>(src);
    uint64_t done = 0, copied = 0;
    while (done < len) {
        uffdio_copy c{};
        c.dst = d + done;
        c.src = s + done;
        c.len = len - done;
        c.mode = (wp ? UFFDIO_COPY_MODE_WP : 0) | (wake_waiters ? 0 : UFFDIO_COPY_MODE_DONTWAKE);
        const int r = ::ioctl(fd_.get(), UFFDIO_COPY, &c);
        const int err = errno;
        if (c.copy > 0) {
            done += static_cast<uint64_t>(c.copy);
            copied += static_cast<uint64_t>(c.copy);
        }
        if (r == 0) continue;
        if (err == EAGAIN) continue;  // partial copy: go on with the rest
        if (err == EEXIST) {          // present already: skip it, wake whoever waits on it
            if (wake_waiters) TRY(wake(reinterpret_cast<void*>(d + done), kPage));
            done += kPage;
            continue;
        }
        return errno_error("UFFDIO_COPY", err);
    }
    return copied;
}

Result<uint64_t> Userfault::zeropage(void* dst, uint64_t len, bool wake_waiters)
{
    const auto d = reinterpret_cast<uint64_t>(dst);
    uint64_t done = 0, filled = 0;
    while (done < len) {
        uffdio_zeropage z{};
        z.range.start = d + done;
        z.range.len = len - done;
        z.mode = wake_waiters ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
        const int r = ::ioctl(fd_.get(), UFFDIO_ZEROPAGE, &z);
        const int err = errno;
        if (z.zeropage > 0) {
            done += static_cast<uint64_t>(z.zeropage);
            filled += static_cast<uint64_t>(z.zeropage);
        }
        if (r == 0 || err == EAGAIN) continue;
        if (err == EEXIST) {
            if (wake_waiters) TRY(wake(reinterpret_cast<void*>(d + done), kPage));
            done += kPage;
            continue;
        }
        return errno_error("UFFDIO_ZEROPAGE", err);
    }
    return filled;
}

Result<void> Userfault::wake(void* addr, uint64_t len)
{
    uffdio_range range{reinterpret_cast<uint64_t>(addr), len};
    if (::ioctl(fd_.get(), UFFDIO_WAKE, &range) < 0) return errno_error("UFFDIO_WAKE");
    return ok();
}

Result<size_t> Userfault::read_events(std::span<uffd_msg> out, int timeout_ms)
{
    if (out.empty()) return size_t{0};
    pollfd p{fd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return size_t{0};
        return errno_error("poll on userfaultfd");
    }
    if (n == 0) return size_t{0};
    if (p.revents & (POLLERR | POLLHUP)) return Error("userfaultfd: poll reported an error");
    const ssize_t got = ::read(fd_.get(), out.data(), out.size_bytes());
    if (got < 0) {
        if (errno == EAGAIN || errno == EINTR) return size_t{0};  // another reader was faster
        return errno_error("read from userfaultfd");
    }
    if (got % sizeof(uffd_msg)) return Error("userfaultfd: short read of an event");
    return static_cast<size_t>(got) / sizeof(uffd_msg);
}

Result<std::optional<uffd_msg>> Userfault::read_event(int timeout_ms)
{
    uffd_msg msg{};
    TRY_ASSIGN(const size_t n, read_events(std::span<uffd_msg>(&msg, 1), timeout_ms));
    if (n == 0) return std::optional<uffd_msg>();
    return std::optional<uffd_msg>(msg);
}

}  // namespace vvmm::ckpt
