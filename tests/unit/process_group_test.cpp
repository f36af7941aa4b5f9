#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "vmm/base/process_group.hpp"
#include "vmm/base/unique_fd.hpp"

using vvmm::UniqueFd;
using vvmm::ChildSpec;
using vvmm::ProcessGroupOptions;
using vvmm::run_process_group;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// A FILE* whose contents the test can read back.
class Capture {
public:
    Capture() : f_(open_memstream(&buf_, &len_)) { REQUIRE(f_ != nullptr); }
    ~Capture()
    {
        std::fclose(f_);
        std::free(buf_);
    }
    std::FILE* file() { return f_; }
    std::string text()
    {
        std::fflush(f_);
        return std::string(buf_, len_);
    }

private:
    char* buf_ = nullptr;
    size_t len_ = 0;
    std::FILE* f_;
};

ChildSpec sh(std::string name, std::string script) { return {std::move(name), {"/bin/sh", "-c", std::move(script)}}; }

bool contains(const std::string& haystack, const std::string& needle) { return haystack.find(needle) != std::string::npos; }

// A FIFO a child writes to once it is ready to be stopped (its traps are
// set); passed as stop_fd it triggers the stop without any sleep in the test.
struct ReadyFifo {
    ReadyFifo()
    {
        char tmpl[] = "/tmp/vvmm-pg-XXXXXX";
        REQUIRE(mkdtemp(tmpl) != nullptr);
        dir = tmpl;
        path = dir + "/ready";
        REQUIRE(mkfifo(path.c_str(), 0600) == 0);
        fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
        REQUIRE(fd.valid());
    }
    ~ReadyFifo() { fs::remove_all(dir); }
    std::string dir, path;
    UniqueFd fd;
};

}  // namespace

TEST_CASE("process_group: lines are prefixed, aligned and never interleaved")
{
    // Every line is written in two write() calls (dash flushes each printf),
    // so a supervisor that forwarded raw chunks would mix the two children.
    const std::vector<ChildSpec> children = {
        sh("a", "i=1; while [ $i -le 300 ]; do printf 'a-%d-' $i; printf 'xxxx\\n'; i=$((i+1)); done;"
                "echo to-stderr >&2; printf 'bin\\001\\377\\n'; printf 'no-newline'"),
        sh("long-name", "i=1; while [ $i -le 300 ]; do printf 'b-%d-' $i; printf 'yyyy\\n'; i=$((i+1)); done"),
    };
    Capture out, err;
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file()});
    REQUIRE(rc.ok());
    CHECK(*rc == 0);

    std::map<std::string, int> next = {{"a", 1}, {"b", 1}};
    std::istringstream lines(out.text());
    std::string line;
    int others = 0;
    while (std::getline(lines, line)) {
        if (line.rfind("a        | a-", 0) == 0 || line.rfind("long-name| b-", 0) == 0) {
            std::string who = line.substr(11, 1);
            std::string expect = who + "-" + std::to_string(next[who]) + "-" + (who == "a" ? "xxxx" : "yyyy");
            REQUIRE(line.substr(11) == expect);
            ++next[who];
        } else {
            ++others;
            bool known = line == "a        | bin\x01\xff" || line == "a        | no-newline";
            CHECK_MESSAGE(known, "unexpected line: ", line);
        }
    }
    CHECK(next["a"] == 301);
    CHECK(next["b"] == 301);
    CHECK(others == 2);
    // A child's stderr (its error lines) goes to our stderr, prefixed too.
    CHECK(contains(err.text(), "a        | to-stderr\n"));
    CHECK_FALSE(contains(out.text(), "to-stderr"));
    CHECK(contains(err.text(), "vvmm: a exited with status 0\n"));
    CHECK(contains(err.text(), "vvmm: long-name exited with status 0\n"));
}

TEST_CASE("process_group: exit statuses are reported and decide the result")
{
    const std::vector<ChildSpec> children = {sh("good", "exit 0"), sh("bad", "echo bye; exit 3")};
    Capture out, err;
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file()});
    REQUIRE(rc.ok());
    CHECK(*rc == 1);
    CHECK(contains(err.text(), "vvmm: good exited with status 0\n"));
    CHECK(contains(err.text(), "vvmm: bad exited with status 3\n"));
    // The child's last output comes before its exit report.
    CHECK(out.text() == "bad | bye\n");
}

TEST_CASE("process_group: with stop_all_on_failure, one failing child stops the others")
{
    const std::vector<ChildSpec> children = {
        sh("waiter", "trap 'exit 143' TERM; while :; do sleep 0.05; done"),
        sh("broken", "sleep 0.2; echo 'cannot restore' >&2; exit 1"),
    };
    Capture out, err;
    const auto t0 = std::chrono::steady_clock::now();
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file(), .stop_all_on_failure = true});
    REQUIRE(rc.ok());
    CHECK(*rc == 1);
    CHECK(std::chrono::steady_clock::now() - t0 < 5s);
    CHECK(contains(err.text(), "broken| cannot restore\n"));
    CHECK(contains(err.text(), "vvmm: broken exited with status 1\n"));
    CHECK(contains(err.text(), "vvmm: the others cannot go on without broken\n"));
    CHECK(contains(err.text(), "vvmm: waiter stopped\n"));
}

TEST_CASE("process_group: a child killed by a signal fails the group")
{
    const std::vector<ChildSpec> children = {sh("k", "kill -9 $$")};
    Capture out, err;
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file()});
    REQUIRE(rc.ok());
    CHECK(*rc == 1);
    CHECK(err.text() == "vvmm: k was killed by signal 9\n");
}

TEST_CASE("process_group: exec failure exits 127 with a clear line")
{
    const std::vector<ChildSpec> children = {{"x", {"/nonexistent/vvmm-child"}}};
    Capture out, err;
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file()});
    REQUIRE(rc.ok());
    CHECK(*rc == 1);
    CHECK(out.text().empty());
    CHECK(err.text() ==
          "x| vvmm: cannot execute /nonexistent/vvmm-child: No such file or directory\nvvmm: x exited with status 127\n");
}

TEST_CASE("process_group: children get only stdin (/dev/null), stdout and stderr")
{
    // An fd of ours without O_CLOEXEC must not leak into the VMM.
    UniqueFd leak(::open("/dev/null", O_RDONLY));
    REQUIRE(leak.valid());
    const std::vector<ChildSpec> children = {
        // The glob's own directory fd is closed again by the time readlink runs.
        sh("f", "for f in /proc/$$/fd/*; do readlink $f | cut -c1-5; done; read x && echo read-something")};
    Capture out, err;
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file()});
    REQUIRE(rc.ok());
    CHECK(out.text() == "f| /dev/\nf| pipe:\nf| pipe:\n");
}

TEST_CASE("process_group: invalid specs start nothing")
{
    auto bad = [](std::vector<ChildSpec> c) { return !run_process_group(c).ok(); };
    CHECK(bad({}));
    CHECK(bad({{"rel", {"sh", "-c", "true"}}}));
    CHECK(bad({{"noargv", {}}}));
    CHECK(bad({{"", {"/bin/true"}}}));
    CHECK(bad({{"new\nline", {"/bin/true"}}}));
    CHECK(bad({{"dup", {"/bin/true"}}, {"dup", {"/bin/true"}}}));
    CHECK(bad({{"nul", {"/bin/echo", std::string("a\0b", 3)}}}));
}

TEST_CASE("process_group: a stop request reaches every child as the stop signal")
{
    ReadyFifo ready;
    const std::vector<ChildSpec> children = {
        sh("a", "trap 'echo got-term; exit 0' TERM; echo > " + ready.path + "; sleep 10 & wait"),
        {"b", {"/bin/sleep", "10"}},
        // A VMM ends with 128 + the signal, as vvmm does.
        sh("c", "trap 'exit 143' TERM; sleep 10 & wait"),
    };
    Capture out, err;
    auto t0 = std::chrono::steady_clock::now();
    auto rc = run_process_group(children, {.out = out.file(), .err = err.file(), .stop_fd = ready.fd.get()});
    REQUIRE(rc.ok());
    CHECK(*rc == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
    CHECK(out.text() == "a| got-term\n");
    const std::string e = err.text();
    CHECK(e.rfind("vvmm: stopping all VMs\n", 0) == 0);
    CHECK(contains(e, "vvmm: a stopped\n"));
    CHECK(contains(e, "vvmm: b stopped by signal 15\n"));
    CHECK(contains(e, "vvmm: c stopped"));  // by its trap's exit 143, or by TERM if that came first
    CHECK_FALSE(contains(e, "status 143"));
}

TEST_CASE("process_group: a child that ignores the stop signal is killed after kill_after")
{
    ReadyFifo ready;
    // The ignored TERM is inherited by sleep, so the whole group ignores it.
    const std::vector<ChildSpec> children = {sh("t", "trap '' TERM; echo > " + ready.path + "; sleep 10")};
    Capture out, err;
    auto t0 = std::chrono::steady_clock::now();
    auto rc = run_process_group(children,
                                {.out = out.file(), .err = err.file(), .kill_after = 200ms, .stop_fd = ready.fd.get()});
    auto elapsed = std::chrono::steady_clock::now() - t0;
    REQUIRE(rc.ok());
    CHECK(*rc == 1);
    CHECK(elapsed >= 200ms);
    CHECK(elapsed < 2s);
    CHECK(err.text() ==
          "vvmm: stopping all VMs\n"
          "vvmm: t did not stop within 200 ms, killing it\n"
          "vvmm: t was killed by signal 9\n");
}

TEST_CASE("process_group: SIGINT is forwarded once as SIGTERM, a second one kills")
{
    // Real signals need a process of their own: the group runs in a forked
    // helper whose output (out and err alike) comes back through a pipe.
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    UniqueFd rd(p[0]), wr(p[1]);
    const std::vector<ChildSpec> children = {
        sh("t", "trap 'echo term' TERM; trap 'echo int' INT; echo ready; i=0; while [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done")};
    pid_t helper = ::fork();
    REQUIRE(helper >= 0);
    if (helper == 0) {
        std::FILE* f = ::fdopen(wr.get(), "w");
        if (!f) _exit(100);
        auto rc = run_process_group(children, {.out = f, .err = f, .kill_after = 5000ms});
        std::fflush(f);
        _exit(rc.ok() ? *rc : 101);
    }
    wr.reset();

    std::string text;
    auto wait_for = [&](const std::string& what) {
        auto deadline = std::chrono::steady_clock::now() + 2s;
        while (!contains(text, what) && std::chrono::steady_clock::now() < deadline) {
            pollfd pfd{rd.get(), POLLIN, 0};
            if (::poll(&pfd, 1, 100) <= 0) continue;
            char buf[4096];
            ssize_t n = ::read(rd.get(), buf, sizeof buf);
            if (n <= 0) break;
            text.append(buf, static_cast<size_t>(n));
        }
        return contains(text, what);
    };
    CHECK(wait_for("t| ready\n"));
    ::kill(helper, SIGINT);
    CHECK(wait_for("t| term\n"));
    ::kill(helper, SIGINT);
    const bool ended = wait_for("vvmm: t was killed by signal 9\n");
    CHECK(ended);
    if (!ended) ::kill(helper, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(helper, &status, 0) == helper);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    INFO("helper output: ", text);
    // (dash may print "t| Terminated" for its sleep in between)
    CHECK(text.find("vvmm: stopping all VMs\n") < text.find("t| term\n"));
    CHECK(contains(text, "vvmm: killing all VMs\n"));
    CHECK(!contains(text, "t| int"));  // the child never saw a SIGINT
    CHECK(!contains(text, "did not stop"));
}
