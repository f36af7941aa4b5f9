// The sandbox in a child process (it cannot be undone): what it allows and
// what it refuses, and what /proc says about it.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "vmm/landlock.hpp"
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

TEST_CASE("landlock: a confined process creates, writes and renames only inside its checkpoint directory, reads only what it was given, and its threads inherit that")
{
    namespace fs = std::filesystem;
    const fs::path base = fs::temp_directory_path() / ("vvmm-landlock-" + std::to_string(::getpid()));
    fs::remove_all(base);
    fs::create_directories(base / "ckpt");
    fs::create_directories(base / "elsewhere");
    std::ofstream(base / "disk.img") << "disk";
    std::ofstream(base / "secret") << "secret";
    const int result = in_child([&]() -> int {
        vvmm::vmm::FileAccessRules rules;
        rules.read_write.push_back((base / "disk.img").string());
        rules.full.push_back((base / "ckpt").string());
        auto applied = vvmm::vmm::restrict_file_access(rules);
        if (!applied) return 1;
        if (applied->rfind("landlock", 0) != 0) return 50;  // this kernel has none: reported, not failed
        auto can_create = [](const fs::path& p) {
            const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd >= 0) ::close(fd);
            return fd >= 0;
        };
        if (!can_create(base / "ckpt" / "memory.img")) return 2;
        if (::mkdir((base / "ckpt" / ".tmp-1").c_str(), 0700) != 0) return 3;
        if (::rename((base / "ckpt" / ".tmp-1").c_str(), (base / "ckpt" / "000001").c_str()) != 0) return 4;
        const int disk = ::open((base / "disk.img").c_str(), O_RDWR | O_CLOEXEC);
        if (disk < 0) return 5;
        ::close(disk);
        // Outside: no new file, no write, no read, not even in a new thread.
        if (can_create(base / "elsewhere" / "x") || errno != EACCES) return 6;
        if (::open((base / "secret").c_str(), O_RDONLY | O_CLOEXEC) != -1 || errno != EACCES) return 7;
        int in_thread = 0;
        std::thread t([&] { in_thread = ::open((base / "secret").c_str(), O_RDONLY | O_CLOEXEC); });
        t.join();
        if (in_thread != -1) return 8;
        if (::open("/etc/passwd", O_RDONLY | O_CLOEXEC) != -1) return 9;
        return 0;
    });
    fs::remove_all(base);
    if (result == 50) {
        MESSAGE("this kernel has no landlock: not checked");
        return;
    }
    CHECK(result == 0);
}
