#include "vmm/sandbox.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace vvmm::vmm {
namespace {

constexpr int kKeptCapabilities[] = {CAP_SYS_PTRACE, CAP_IPC_LOCK};

// Every system call vvmm's threads make after set-up: vCPUs (KVM ioctls),
// devices and the I/O thread (io_uring, file I/O), checkpoints (files,
// directories, userfaultfd, memory mappings), the network thread (sockets,
// epoll, TLS), the control socket, logging and the C++ runtime.
constexpr const char* kAllowed[] = {
    // memory
    "brk", "mmap", "munmap", "mprotect", "madvise", "mremap", "mincore", "membarrier", "memfd_create",
    // files and directories
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2",
    "openat", "close", "close_range", "fstat", "newfstatat", "statx", "lseek", "fsync", "fdatasync",
    "sync_file_range", "fallocate", "ftruncate", "fadvise64", "getdents64", "mkdirat", "unlinkat", "renameat",
    "renameat2", "linkat", "readlinkat", "faccessat", "faccessat2", "fchmod", "fstatfs", "statfs", "fcntl",
    "dup", "dup2", "dup3", "pipe2", "copy_file_range", "sendfile", "splice", "umask", "flock",
    "open", "stat", "lstat", "access", "readlink", "mkdir", "rmdir", "unlink", "rename", "getdents", "pipe",
    "link", "truncate", "chmod", "fchmodat", "utimensat", "fstatat64", "fsetxattr", "fgetxattr", "syncfs",
    // KVM, terminals, userfaultfd, io_uring
    "ioctl", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "eventfd2",
    // time and waiting
    "clock_gettime", "clock_getres", "gettimeofday", "nanosleep", "clock_nanosleep", "timerfd_create",
    "timerfd_settime", "timerfd_gettime", "poll", "ppoll", "select", "pselect6", "epoll_create1", "epoll_ctl",
    "epoll_wait", "epoll_pwait", "epoll_pwait2", "futex", "futex_waitv", "sched_yield", "restart_syscall",
    "signalfd", "signalfd4", "mlock", "mlock2", "munlock",
    // sockets (peer mesh, control socket)
    "socket", "socketpair", "connect", "accept", "accept4", "bind", "listen", "getsockname", "getpeername",
    "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown",
    // threads, signals, process
    "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "exit", "exit_group", "gettid", "getpid",
    "getppid", "getuid", "geteuid", "getgid", "getegid", "rt_sigaction", "rt_sigprocmask",
    "rt_sigreturn", "rt_sigtimedwait", "rt_sigpending", "sigaltstack", "sched_getaffinity", "sched_setaffinity",
    "getrlimit", "prlimit64", "getrusage", "uname", "sysinfo", "getrandom", "getcpu", "capget",
};

bool g_enabled = true;

struct FilterFree {
    void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

Result<void> check(int rc, const std::string& what)
{
    if (rc < 0) return Error("sandbox: " + what + ": " + std::strerror(-rc));
    return ok();
}

}  // namespace

void set_sandbox_enabled(bool enabled) { g_enabled = enabled; }
bool sandbox_enabled() { return g_enabled; }

uint64_t sandbox_kept_capabilities()
{
    uint64_t mask = 0;
    for (int cap : kKeptCapabilities) mask |= uint64_t{1} << cap;
    return mask;
}

// Needs CAP_SETPCAP, which a root vvmm still has; without it (a VMM its
// launcher started as another user) the set was already reduced before exec.
static Result<void> drop_bounding_set()
{
    for (int cap = 0; cap <= CAP_LAST_CAP; ++cap) {
        if ((sandbox_kept_capabilities() >> cap) & 1) continue;
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL && errno != EPERM)
            return errno_error("sandbox: dropping capability " + std::to_string(cap) + " from the bounding set");
    }
    return ok();
}

// Permitted and effective become the kept capabilities we have; inheritable
// too if `inheritable` (for ambient ones), else nothing.
static Result<void> set_capabilities(bool inheritable)
{
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {};
    if (::syscall(SYS_capget, &header, data) < 0) return errno_error("sandbox: capget");
    const uint64_t permitted = (uint64_t{data[1].permitted} << 32) | data[0].permitted;
    const uint64_t keep = permitted & sandbox_kept_capabilities();
    for (int i = 0; i < 2; ++i) {
        data[i].effective = data[i].permitted = static_cast<uint32_t>(keep >> (32 * i));
        data[i].inheritable = inheritable ? data[i].permitted : 0;
    }
    if (::syscall(SYS_capset, &header, data) < 0) return errno_error("sandbox: capset");
    return ok();
}

Result<void> drop_capabilities()
{
    TRY(drop_bounding_set());
    TRY(set_capabilities(false));
    // Ambient capabilities would survive an exec (a launcher's --user sets them for its VMMs).
    clear_ambient_capabilities();
    return ok();
}

void clear_ambient_capabilities() { (void)::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); }

Result<void> become_user(const std::string& name)
{
    std::vector<char> buf(16384);
    passwd pw{}, *found = nullptr;
    if (const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found); rc != 0 || !found)
        return Error("--user " + name + ": no such user" + (rc ? std::string(" (") + std::strerror(rc) + ")" : ""));
    if (pw.pw_uid == 0) return Error("--user " + name + ": that is root; name an unprivileged account");
    if (::geteuid() != 0)
        return Error("--user " + name + ": vvmm must be started as root to become another user (it runs as uid " +
                     std::to_string(::geteuid()) + "); or run it as " + name + " directly");
    TRY(drop_bounding_set());
    if (::initgroups(name.c_str(), pw.pw_gid) < 0) return errno_error("--user " + name + ": setting its groups");
    if (::setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid) < 0) return errno_error("--user " + name + ": setresgid");
    // Keep the permitted set across the uid change (it would be cleared).
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0) return errno_error("--user: PR_SET_KEEPCAPS");
    if (::setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid) < 0) return errno_error("--user " + name + ": setresuid");
    (void)::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    // As `sudo -H -u NAME` would: files vvmm finds through HOME (the default
    // checkpoint key) are NAME's, not root's.
    ::setenv("HOME", pw.pw_dir, 1);
    ::unsetenv("XDG_CONFIG_HOME");
    TRY(set_capabilities(true));
    for (int cap : kKeptCapabilities)
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            return errno_error("--user: making capability " + std::to_string(cap) + " ambient");
    return ok();
}

Result<void> enter_sandbox()
{
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return errno_error("sandbox: PR_SET_NO_NEW_PRIVS");
    std::unique_ptr<void, FilterFree> ctx(seccomp_init(SCMP_ACT_ERRNO(EPERM)));
    if (!ctx) return Error("sandbox: seccomp_init failed");
    // Every thread gets the filter at once; a thread that cannot makes it fail.
    TRY(check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_TSYNC, 1), "seccomp TSYNC"));
    // A refused call is logged by the kernel (audit type 1326: which call, which
    // process), so a call missing from the list can be found in dmesg.
    TRY(check(seccomp_attr_set(ctx.get(), SCMP_FLTATR_CTL_LOG, 1), "seccomp logging"));
    for (const char* name : kAllowed) {
        const int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
        TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, nr, 0), std::string("allowing ") + name));
    }
    // New threads only, never a new process: clone with CLONE_THREAD.
    TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)),
              "allowing clone of threads"));
    // clone3 passes its flags in memory, where a filter cannot look: ENOSYS
    // makes the C library fall back to clone.
    TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "refusing clone3"));
    // Signals to this process's own threads only (raise, abort, pthread_kill);
    // kill only with signal 0, to ask whether a checkpoint's writer is alive.
    TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                               SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(::getpid()))),
              "allowing tgkill"));
    TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(kill), 1, SCMP_A1(SCMP_CMP_EQ, 0)),
              "allowing kill with signal 0"));
    // prctl: reading only (names, the no_new_privs and seccomp state).
    for (int option : {PR_GET_NAME, PR_SET_NAME, PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAPBSET_READ, PR_GET_DUMPABLE})
        TRY(check(seccomp_rule_add(ctx.get(), SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(option))),
                  "allowing prctl"));
    TRY(check(seccomp_load(ctx.get()), "loading the seccomp filter"));
    return ok();
}

}  // namespace vvmm::vmm
