#include "vmm/base/process_group.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>

#include "vmm/base/unique_fd.hpp"

namespace vvmm {
namespace {

using Clock = std::chrono::steady_clock;

// A child that never writes a newline must not grow our memory without bound.
constexpr size_t kMaxLine = 16 * 1024;
// Without SIGCHLD (another thread of the caller may take it) we still reap.
constexpr int kReapFallbackMs = 250;

struct Stream {
    UniqueFd fd;
    std::string pending;  // bytes after the last newline
};

struct Child {
    const ChildSpec* spec = nullptr;
    std::string prefix;  // "vm1  | "
    pid_t pid = -1;
    bool alive = false;
    Stream streams[2];  // stdout, stderr
};

// Restores the caller's signal mask however we leave.
class MaskGuard {
public:
    explicit MaskGuard(const sigset_t& old) : old_(old) {}
    ~MaskGuard() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
    MaskGuard(const MaskGuard&) = delete;
    MaskGuard& operator=(const MaskGuard&) = delete;

private:
    sigset_t old_;
};

Result<void> validate(std::span<const ChildSpec> children)
{
    if (children.empty()) return Error("no VMs to run");
    std::set<std::string> names;
    for (const ChildSpec& c : children) {
        if (c.name.empty()) return Error("a VM has an empty name");
        for (unsigned char ch : c.name)
            if (ch < 0x20 || ch == 0x7f) return Error("VM name '" + c.name + "' has a control character");
        if (!names.insert(c.name).second) return Error("VM name '" + c.name + "' appears twice");
        if (c.argv.empty() || c.argv[0].empty() || c.argv[0][0] != '/')
            return Error("VM " + c.name + ": the program must be an absolute path");
        for (const std::string& a : c.argv)
            if (a.find('\0') != std::string::npos) return Error("VM " + c.name + ": an argument contains NUL");
    }
    return ok();
}

void write_all(int fd, const char* s, size_t n)
{
    while (n > 0) {
        ssize_t w = ::write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= static_cast<size_t>(w);
    }
}

void write_str(int fd, const char* s) { write_all(fd, s, std::strlen(s)); }

// Runs in the forked child: only async-signal-safe calls (the caller may have
// threads). Never returns.
[[noreturn]] void exec_child(const std::vector<char*>& argv, int devnull, int out_w, int err_w, pid_t parent,
                             int death_signal)
{
    // Handlers do not survive exec but "ignored" does (vvmm ignores SIGPIPE).
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);

    setpgid(0, 0);
    // If the supervisor dies, its VMs stop too instead of running orphaned.
    prctl(PR_SET_PDEATHSIG, death_signal);
    if (getppid() != parent) _exit(127);

    // Move the three fds above 2 first, so no dup2 below clobbers another.
    int fds[3] = {fcntl(devnull, F_DUPFD_CLOEXEC, 3), fcntl(out_w, F_DUPFD_CLOEXEC, 3),
                  fcntl(err_w, F_DUPFD_CLOEXEC, 3)};
    for (int i = 0; i < 3; ++i)
        if (fds[i] < 0 || dup2(fds[i], i) < 0) _exit(127);
    close_range(3, ~0U, 0);

    execv(argv[0], argv.data());
    int e = errno;
    write_str(2, "vvmm: cannot execute ");
    write_str(2, argv[0]);
    write_str(2, ": ");
    const char* why = strerrordesc_np(e);
    write_str(2, why ? why : "unknown error");
    write_str(2, "\n");
    _exit(127);
}

class Supervisor {
public:
    Supervisor(std::span<const ChildSpec> specs, const ProcessGroupOptions& options) : options_(options)
    {
        size_t width = 0;
        for (const ChildSpec& s : specs) width = std::max(width, s.name.size());
        children_.resize(specs.size());
        for (size_t i = 0; i < specs.size(); ++i) {
            children_[i].spec = &specs[i];
            children_[i].prefix = specs[i].name + std::string(width - specs[i].name.size(), ' ') + "| ";
        }
    }

    // Kills and reaps whatever is still alive (a failed start).
    ~Supervisor()
    {
        for (Child& c : children_)
            if (c.alive) {
                signal_child(c, SIGKILL);
                while (::waitpid(c.pid, nullptr, 0) < 0 && errno == EINTR) {
                }
            }
    }

    Result<void> start_all()
    {
        UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (!devnull.valid()) return errno_error("opening /dev/null");
        const pid_t self = ::getpid();
        for (Child& c : children_) {
            int out[2], err[2];
            if (::pipe2(out, O_CLOEXEC) < 0) return errno_error("pipe");
            UniqueFd out_r(out[0]), out_w(out[1]);
            if (::pipe2(err, O_CLOEXEC) < 0) return errno_error("pipe");
            UniqueFd err_r(err[0]), err_w(err[1]);
            std::vector<char*> argv;
            for (const std::string& a : c.spec->argv) argv.push_back(const_cast<char*>(a.c_str()));
            argv.push_back(nullptr);

            pid_t pid = ::fork();
            if (pid < 0) return errno_error("starting " + c.spec->name);
            if (pid == 0) exec_child(argv, devnull.get(), out_w.get(), err_w.get(), self, options_.stop_signal);
            // Also here: whichever of parent and child runs first, the group
            // exists before we might signal it.
            ::setpgid(pid, pid);
            c.pid = pid;
            c.alive = true;
            for (int fd : {out_r.get(), err_r.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
            c.streams[0].fd = std::move(out_r);
            c.streams[1].fd = std::move(err_r);
        }
        return ok();
    }

    int run(int signal_fd)
    {
        std::vector<pollfd> fds;
        std::vector<Stream*> stream_of;  // parallel to fds, null for non-streams
        bool watch_stop_fd = options_.stop_fd >= 0;
        for (;;) {
            reap();
            check_deadline();
            std::fflush(options_.out);
            std::fflush(options_.err);
            if (std::none_of(children_.begin(), children_.end(), [](const Child& c) { return c.alive; })) break;

            fds.clear();
            stream_of.clear();
            fds.push_back({signal_fd, POLLIN, 0});
            stream_of.push_back(nullptr);
            if (watch_stop_fd) {
                fds.push_back({options_.stop_fd, POLLIN, 0});
                stream_of.push_back(nullptr);
            }
            for (Child& c : children_)
                for (Stream& s : c.streams)
                    if (s.fd.valid()) {
                        fds.push_back({s.fd.get(), POLLIN, 0});
                        stream_of.push_back(&s);
                    }
            int timeout = kReapFallbackMs;
            if (stop_requests_ > 0 && !escalated_) {
                auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
                timeout = static_cast<int>(std::clamp<long long>(left + 1, 0, timeout));
            }
            int n = ::poll(fds.data(), fds.size(), timeout);
            if (n < 0) continue;  // EINTR: cannot be much else with valid fds

            if (fds[0].revents) drain_signals(signal_fd);
            if (watch_stop_fd && fds[1].revents) {
                watch_stop_fd = false;
                request_stop();
            }
            for (size_t i = 0; i < fds.size(); ++i)
                if (stream_of[i] && fds[i].revents) read_once(*owner(stream_of[i]), *stream_of[i]);
        }
        return failed_ ? 1 : 0;
    }

private:
    Child* owner(Stream* s)
    {
        for (Child& c : children_)
            if (s == &c.streams[0] || s == &c.streams[1]) return &c;
        return nullptr;
    }

    // A child's stdout goes to ours, its stderr (errors) to ours.
    std::FILE* destination(const Child& c, const Stream& s) const
    {
        return &s == &c.streams[1] ? options_.err : options_.out;
    }

    void emit(const Child& c, const Stream& s, const char* data, size_t n)
    {
        std::FILE* to = destination(c, s);
        std::fwrite(c.prefix.data(), 1, c.prefix.size(), to);
        std::fwrite(data, 1, n, to);
    }

    // One read per wakeup, so a chatty child cannot starve the others.
    // At EOF or error the stream is closed.
    void read_once(const Child& c, Stream& s)
    {
        char buf[65536];
        ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        if (n <= 0) {
            finish(c, s);
            return;
        }
        s.pending.append(buf, static_cast<size_t>(n));
        size_t start = 0;
        for (;;) {
            size_t nl = s.pending.find('\n', start);
            if (nl == std::string::npos) break;
            emit(c, s, s.pending.data() + start, nl + 1 - start);
            start = nl + 1;
        }
        s.pending.erase(0, start);
        while (s.pending.size() >= kMaxLine) {  // an endless line goes out in pieces
            emit(c, s, s.pending.data(), kMaxLine);
            std::fputc('\n', destination(c, s));
            s.pending.erase(0, kMaxLine);
        }
    }

    // A last line without newline still gets printed, as a line.
    void finish(const Child& c, Stream& s)
    {
        if (!s.pending.empty()) {
            emit(c, s, s.pending.data(), s.pending.size());
            std::fputc('\n', destination(c, s));
            s.pending.clear();
        }
        s.fd.reset();
    }

    void drain_signals(int signal_fd)
    {
        signalfd_siginfo info;
        while (::read(signal_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info))
            if (info.ssi_signo != SIGCHLD) request_stop();
    }

    void signal_child(const Child& c, int sig)
    {
        // The whole group, so helpers the VMM started go too; a child that
        // moved itself to another group still gets it directly.
        if (::kill(-c.pid, sig) < 0) ::kill(c.pid, sig);
    }

    void request_stop()
    {
        ++stop_requests_;
        if (stop_requests_ == 1) {
            std::fputs("vvmm: stopping all VMs\n", options_.err);
            for (const Child& c : children_)
                if (c.alive) signal_child(c, options_.stop_signal);
            deadline_ = Clock::now() + options_.kill_after;
        } else if (!escalated_) {
            escalated_ = true;
            std::fputs("vvmm: killing all VMs\n", options_.err);
            for (const Child& c : children_)
                if (c.alive) signal_child(c, SIGKILL);
        }
        std::fflush(options_.err);
    }

    void check_deadline()
    {
        if (stop_requests_ == 0 || escalated_ || Clock::now() < deadline_) return;
        escalated_ = true;
        for (const Child& c : children_)
            if (c.alive) {
                std::fprintf(options_.err, "vvmm: %s did not stop within %lld ms, killing it\n",
                             c.spec->name.c_str(), static_cast<long long>(options_.kill_after.count()));
                signal_child(c, SIGKILL);
            }
    }

    void reap()
    {
        for (Child& c : children_) {
            if (!c.alive) continue;
            int status = 0;
            pid_t r = ::waitpid(c.pid, &status, WNOHANG);
            if (r != c.pid) continue;
            c.alive = false;
            // What it wrote before exiting is in the pipe now; print it before
            // the exit report. A grandchild still holding the pipe is not
            // waited for (bounded, in case it keeps writing).
            for (Stream& s : c.streams)
                for (int i = 0; i < 64 && s.fd.valid(); ++i) {
                    pollfd p{s.fd.get(), POLLIN, 0};
                    if (::poll(&p, 1, 0) <= 0) break;
                    read_once(c, s);
                }
            for (Stream& s : c.streams)
                if (s.fd.valid()) finish(c, s);
            std::fflush(options_.out);
            std::fflush(options_.err);
            report(c, status);
            if (failed_ && options_.stop_all_on_failure && stop_requests_ == 0) {
                std::fprintf(options_.err, "vvmm: the others cannot go on without %s\n", c.spec->name.c_str());
                request_stop();
            }
        }
    }

    void report(const Child& c, int status)
    {
        const char* name = c.spec->name.c_str();
        const bool stopping = stop_requests_ > 0;
        if (WIFEXITED(status)) {
            int code = WEXITSTATUS(status);
            // A VMM ends with 128 + the signal that stopped it, like a shell.
            if (stopping && (code == 0 || code == 128 + options_.stop_signal)) {
                std::fprintf(options_.err, "vvmm: %s stopped\n", name);
            } else {
                std::fprintf(options_.err, "vvmm: %s exited with status %d\n", name, code);
                if (code != 0) failed_ = true;
            }
        } else if (WIFSIGNALED(status)) {
            int sig = WTERMSIG(status);
            if (stopping && sig == options_.stop_signal) {
                std::fprintf(options_.err, "vvmm: %s stopped by signal %d\n", name, sig);
            } else {
                std::fprintf(options_.err, "vvmm: %s was killed by signal %d\n", name, sig);
                failed_ = true;
            }
        }
        std::fflush(options_.err);
    }

    const ProcessGroupOptions& options_;
    std::vector<Child> children_;
    int stop_requests_ = 0;
    bool escalated_ = false;
    bool failed_ = false;
    Clock::time_point deadline_{};
};

}  // namespace

Result<int> run_process_group(std::span<const ChildSpec> children, const ProcessGroupOptions& options)
{
    TRY(validate(children));
    if (options.stop_signal <= 0 || options.stop_signal >= NSIG) return Error("invalid stop signal");

    sigset_t set, old;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&set, s);
    if (int e = pthread_sigmask(SIG_BLOCK, &set, &old); e != 0) return errno_error("blocking signals", e);
    MaskGuard restore_mask(old);
    // Only the three stop signals and SIGCHLD: reading them here consumes them.
    UniqueFd signal_fd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signal_fd.valid()) return errno_error("signalfd");

    Supervisor sup(children, options);
    TRY(sup.start_all());
    int rc = sup.run(signal_fd.get());
    // A Ctrl-C that came after the last child ended was meant for the group:
    // consume it instead of letting it kill the caller when the mask is restored.
    signalfd_siginfo info;
    while (::read(signal_fd.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    }
    return rc;
}

}  // namespace vvmm
