// The sandbox in a child process (it cannot be undone): what it allows and
// what it refuses, and what /proc says about it.
#include <doctest/doctest.h>

#include <sys/ptrace.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>
#include <thread>

#include "vmm/sandbox.hpp"

namespace {

std::string status_field(const std::string& name)
{
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line))
        if (line.rfind(name + ":", 0) == 0) {
            const auto value = line.substr(name.size() + 1);
            return value.substr(value.find_first_not_of(" \t"));
        }
    return "";
}

// Runs `body` in a forked child; its exit status (0: every check held).
template <typename Body>
int in_child(Body body)
{
    const pid_t pid = ::fork();
    if (pid == 0) _exit(body());
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("sandbox: no_new_privs, seccomp on every thread, capabilities reduced; refused calls fail, the rest work")
{
    const int result = in_child([] {
        std::thread before([] {});  // a thread that exists before: TSYNC must cover it
        if (!vvmm::vmm::drop_capabilities()) return 1;
        if (!vvmm::vmm::enter_sandbox()) return 2;
        if (status_field("Seccomp") != "2") return 3;
        if (status_field("NoNewPrivs") != "1") return 4;
        const uint64_t eff = std::stoull(status_field("CapEff"), nullptr, 16);
        if ((eff & ~vvmm::vmm::sandbox_kept_capabilities()) != 0) return 5;
        if (::geteuid() == 0 && status_field("CapBnd") != status_field("CapPrm")) return 6;
        // Refused: a new program, a new process, tracing.
        char* argv[] = {const_cast<char*>("/bin/true"), nullptr};
        if (::execv("/bin/true", argv) != -1 || errno != EPERM) return 7;
        if (::fork() != -1 || errno != EPERM) return 8;
        if (::ptrace(PTRACE_TRACEME, 0, nullptr, nullptr) != -1 || errno != EPERM) return 9;
        // Signals: only signal 0 to another process (is it alive?); any to our own threads.
        if (::kill(::getppid(), SIGTERM) != -1 || errno != EPERM) return 12;
        if (::kill(::getppid(), 0) != 0) return 13;
        // Allowed: threads (clone3 falls back to clone), files, pipes.
        bool ran = false;
        std::thread t([&] { ran = true; });
        t.join();
        if (!ran) return 10;
        int fds[2];
        if (::pipe2(fds, 0) != 0 || ::write(fds[1], "x", 1) != 1) return 11;
        before.join();
        return 0;
    });
    CHECK(result == 0);
}
