// The control API over real Unix sockets: server, client and the CLI's
// reply descriptions.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "cli/control_commands.hpp"
#include "control/control_client.hpp"
#include "control/control_server.hpp"
#include "vmm/base/unique_fd.hpp"

using namespace vvmm;
using namespace vvmm::control;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

struct TempDir {
    TempDir()
    {
        char tmpl[] = "/tmp/vvmm-ctl-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~TempDir() { std::filesystem::remove_all(path); }
    std::string path;
};

// Records every call; replies through `respond` if set. A handler call for
// "checkpoint" blocks while `hold_checkpoint` is set, so tests can overlap.
struct TestHandler : ControlHandler {
    json handle(const ControlRequest& typed) override
    {
        const json request = to_json(typed);
        {
            std::lock_guard lock(mutex);
            calls.push_back(request);
        }
        called.notify_all();
        if (request["cmd"] == "checkpoint") {
            std::unique_lock lock(mutex);
            released.wait(lock, [this] { return !hold_checkpoint; });
        }
        if (respond) return respond(request);
        return {{"ok", true}, {"state", "running"}, {"echo", request}};
    }
    std::vector<json> snapshot()
    {
        std::lock_guard lock(mutex);
        return calls;
    }
    bool wait_for_calls(size_t n)
    {
        std::unique_lock lock(mutex);
        return called.wait_for(lock, 5s, [&] { return calls.size() >= n; });
    }
    void release()
    {
        {
            std::lock_guard lock(mutex);
            hold_checkpoint = false;
        }
        released.notify_all();
    }

    std::mutex mutex;
    std::condition_variable called, released;
    std::vector<json> calls;
    bool hold_checkpoint = false;
    std::function<json(const json&)> respond;
};

UniqueFd connect_raw(const std::string& path)
{
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd.valid());
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

void send_raw(const UniqueFd& fd, const std::string& bytes)
{
    size_t sent = 0;
    while (sent < bytes.size()) {
        const ssize_t n = ::send(fd.get(), bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return;  // the server may close on us mid-line (overlong): fine
        sent += static_cast<size_t>(n);
    }
}

// One reply line, or "" on EOF / 5 s without one.
std::string read_line(const UniqueFd& fd)
{
    std::string line;
    char c;
    while (::recv(fd.get(), &c, 1, 0) == 1) {
        if (c == '\n') return line;
        line += c;
    }
    return "";
}

// EOF, or a reset when the server closed with our unread bytes in its buffer.
bool peer_closed(const UniqueFd& fd)
{
    char c;
    const ssize_t n = ::recv(fd.get(), &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

json ask(const std::string& path, const json& request)
{
    auto r = control_request(path, request, 5s);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message()));
    return r.value();
}

std::string error_of(const json& reply)
{
    REQUIRE(reply.is_object());
    CHECK(reply["ok"] == false);
    return reply.value("error", std::string());
}

struct Fixture {
    TempDir dir;
    std::string path = dir.path + "/a.sock";
    TestHandler handler;
    std::unique_ptr<ControlServer> server;
    Fixture()
    {
        auto s = ControlServer::create(path, handler);
        REQUIRE_MESSAGE(s.ok(), (s.ok() ? "" : s.error().message()));
        server = std::move(s).value();
    }
};

}  // namespace

TEST_CASE("control server: socket is a 0600 socket even with umask 0, and is removed at the end")
{
    TempDir dir;
    const std::string path = dir.path + "/sub/dir/a.sock";  // parents do not exist yet
    TestHandler handler;
    const mode_t old_umask = ::umask(0);
    auto server = ControlServer::create(path, handler);
    ::umask(old_umask);
    REQUIRE_MESSAGE(server.ok(), (server.ok() ? "" : server.error().message()));
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    CHECK((st.st_mode & 07777) == 0600);
    REQUIRE(::stat((dir.path + "/sub").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    server.value().reset();
    CHECK(::access(path.c_str(), F_OK) != 0);
}

TEST_CASE("control server: a live server is not replaced, a stale socket is, a plain file is refused")
{
    Fixture f;
    TestHandler other;
    auto second = ControlServer::create(f.path, other);
    REQUIRE(!second.ok());
    CHECK(second.error().message().find("already listening on " + f.path) != std::string::npos);
    CHECK(ask(f.path, {{"cmd", "status"}})["ok"] == true);  // the first one still works

    // A socket file nobody listens on: what a killed VMM leaves behind.
    const std::string stale = f.dir.path + "/stale.sock";
    {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un addr {};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, stale.c_str(), sizeof addr.sun_path - 1);
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    auto client_error = control_request(stale, {{"cmd", "status"}}, 1s);
    REQUIRE(!client_error.ok());
    CHECK(client_error.error().message().find("no VMM is listening on " + stale) != std::string::npos);
    CHECK(client_error.error().message().find("connection refused") != std::string::npos);
    auto replaced = ControlServer::create(stale, other);
    REQUIRE_MESSAGE(replaced.ok(), (replaced.ok() ? "" : replaced.error().message()));
    CHECK(ask(stale, {{"cmd", "status"}})["ok"] == true);

    const std::string file = f.dir.path + "/file";
    std::ofstream(file) << "precious";
    auto refused = ControlServer::create(file, other);
    REQUIRE(!refused.ok());
    CHECK(refused.error().message().find("not a socket") != std::string::npos);
    std::ifstream in(file);
    std::string content;
    in >> content;
    CHECK(content == "precious");
}

TEST_CASE("control server: valid requests reach the handler, normalized, and its reply comes back as is")
{
    Fixture f;
    f.handler.respond = [](const json& r) { return json{{"ok", true}, {"cmd_seen", r["cmd"]}, {"n", 42}}; };
    for (const char* cmd : {"status", "pause", "resume", "stop"}) {
        const json reply = ask(f.path, {{"cmd", cmd}});
        CHECK(reply == json{{"ok", true}, {"cmd_seen", cmd}, {"n", 42}});
    }
    ask(f.path, {{"cmd", "checkpoint"}, {"dir", "ckpts/a"}});
    ask(f.path, {{"cmd", "checkpoint"}, {"dir", "ckpts/b"}, {"mode", "cow"}, {"incremental", true}});
    const auto calls = f.handler.snapshot();
    REQUIRE(calls.size() == 6);
    CHECK(calls[0] == json{{"cmd", "status"}});
    CHECK(calls[1] == json{{"cmd", "pause"}});
    CHECK(calls[2] == json{{"cmd", "resume"}});
    CHECK(calls[3] == json{{"cmd", "stop"}});
    CHECK(calls[4] == json{{"cmd", "checkpoint"}, {"dir", "ckpts/a"}, {"mode", "stop"}, {"incremental", false}});
    CHECK(calls[5] == json{{"cmd", "checkpoint"}, {"dir", "ckpts/b"}, {"mode", "cow"}, {"incremental", true}});
}

TEST_CASE("control server: bad requests are refused without calling the handler")
{
    Fixture f;
    struct Case {
        json request;
        const char* error;
    };
    const Case cases[] = {
        {{{"cmd", "reboot"}}, "unknown command 'reboot'"},
        {{{"cmd", 7}}, "\"cmd\" must be a string"},
        {{{"dir", "x"}}, "missing \"cmd\""},
        {json::array({"status"}), "request must be a JSON object"},
        {"status", "request must be a JSON object"},
        {{{"cmd", "status"}, {"verbose", true}}, "unknown field 'verbose' for status"},
        {{{"cmd", "checkpoint"}, {"mode", "fast"}}, "\"mode\" must be stop, live or cow, not 'fast'"},
        {{{"cmd", "checkpoint"}, {"dir", 3}}, "\"dir\" must be a string"},
        {{{"cmd", "checkpoint"}, {"dir", ""}}, "\"dir\" must not be empty"},
        {{{"cmd", "checkpoint"}, {"dir", std::string("a\0b", 3)}}, "\"dir\" must not contain NUL"},
        {{{"cmd", "checkpoint"}, {"dir", "d"}, {"mode", "fast"}}, "\"mode\" must be stop, live or cow, not 'fast'"},
        {{{"cmd", "checkpoint"}, {"dir", "d"}, {"mode", 1}}, "\"mode\" must be a string"},
        {{{"cmd", "checkpoint"}, {"dir", "d"}, {"incremental", "yes"}}, "\"incremental\" must be true or false"},
        {{{"cmd", "checkpoint"}, {"dir", "d"}, {"incremantal", true}}, "unknown field 'incremantal' for checkpoint"},
    };
    for (const auto& c : cases) {
        CAPTURE(c.request.dump());
        CHECK(error_of(ask(f.path, c.request)).find(c.error) == 0);
    }
    // No "dir": the VM's own checkpoint directory; the CLI then sends none either.
    auto no_dir = control::parse_control_request({{"cmd", "checkpoint"}});
    REQUIRE(no_dir);
    CHECK(no_dir->dir.empty());
    CHECK(!control::to_json(no_dir.value()).contains("dir"));

    // Not JSON at all, blank, and absurd nesting: answered, and the
    // connection stays usable for the next request.
    UniqueFd fd = connect_raw(f.path);
    send_raw(fd, "{\"cmd\": \"status\"\n");
    CHECK(read_line(fd).find("malformed request: ") != std::string::npos);
    send_raw(fd, "   \r\n");
    CHECK(json::parse(read_line(fd)) == json{{"ok", false}, {"error", "empty request"}});
    send_raw(fd, std::string(30000, '[') + std::string(30000, ']') + "\n");
    CHECK(error_of(json::parse(read_line(fd))) == "request must be a JSON object");
    CHECK(f.handler.snapshot().empty());
    send_raw(fd, "{\"cmd\":\"status\"}\r\n");
    CHECK(json::parse(read_line(fd))["ok"] == true);
    CHECK(f.handler.snapshot().size() == 1);
}

TEST_CASE("control server: a line of exactly 64 KiB is read, a longer one refused and the connection closed")
{
    Fixture f;
    std::string request = "{\"cmd\":\"status\"}";
    request.resize(kMaxRequestLine, ' ');  // trailing whitespace is valid JSON
    UniqueFd fd = connect_raw(f.path);
    send_raw(fd, request + "\n");
    CHECK(json::parse(read_line(fd))["ok"] == true);
    CHECK(f.handler.snapshot().size() == 1);

    send_raw(fd, request + " \n");
    const std::string reply = read_line(fd);
    CHECK(error_of(json::parse(reply)).find("longer than 65536 bytes") != std::string::npos);
    CHECK(peer_closed(fd));
    CHECK(f.handler.snapshot().size() == 1);
}

TEST_CASE("control server: several clients at once, pipelined requests answered in order")
{
    Fixture f;
    UniqueFd a = connect_raw(f.path);
    UniqueFd b = connect_raw(f.path);
    // b is answered although a is connected and has not sent anything.
    send_raw(b, "{\"cmd\":\"status\"}\n");
    CHECK(json::parse(read_line(b))["ok"] == true);
    send_raw(a, "{\"cmd\":\"pause\"}\n{\"cmd\":\"resume\"}\n{\"cmd\":\"bogus\"}\n");
    CHECK(json::parse(read_line(a))["echo"]["cmd"] == "pause");
    CHECK(json::parse(read_line(a))["echo"]["cmd"] == "resume");
    CHECK(error_of(json::parse(read_line(a))).find("unknown command 'bogus'") == 0);
    // A client hanging up mid-line does not disturb the others.
    {
        UniqueFd c = connect_raw(f.path);
        send_raw(c, "{\"cmd\":");
    }
    send_raw(b, "{\"cmd\":\"status\"}\n");
    CHECK(json::parse(read_line(b))["ok"] == true);
}

TEST_CASE("control server: status is answered during a slow checkpoint; other commands get 'busy'")
{
    Fixture f;
    f.handler.hold_checkpoint = true;
    auto checkpoint = std::async(std::launch::async, [&] {
        return control_request(f.path, {{"cmd", "checkpoint"}, {"dir", "d"}, {"mode", "cow"}}, 10s);
    });
    REQUIRE(f.handler.wait_for_calls(1));

    const json status = ask(f.path, {{"cmd", "status"}});
    CHECK(status["ok"] == true);
    for (const char* cmd : {"pause", "stop"})
        CHECK(error_of(ask(f.path, {{"cmd", cmd}})).find("busy: checkpoint in progress") == 0);
    CHECK(error_of(ask(f.path, {{"cmd", "checkpoint"}, {"dir", "e"}})).find("busy: checkpoint in progress") == 0);
    CHECK(checkpoint.wait_for(0s) == std::future_status::timeout);  // still held

    f.handler.release();
    auto reply = checkpoint.get();
    REQUIRE(reply.ok());
    CHECK(reply.value()["echo"]["dir"] == "d");
    const auto calls = f.handler.snapshot();
    REQUIRE(calls.size() == 2);
    CHECK(calls[1]["cmd"] == "status");
    CHECK(ask(f.path, {{"cmd", "pause"}})["ok"] == true);  // no longer busy
}

TEST_CASE("control server: a throwing handler or a reply without \"ok\" becomes an internal error")
{
    Fixture f;
    f.handler.respond = [](const json& r) -> json {
        if (r["cmd"] == "pause") throw std::runtime_error("boom");
        return json{{"state", "running"}};
    };
    CHECK(error_of(ask(f.path, {{"cmd", "pause"}})) == "internal error: boom");
    CHECK(error_of(ask(f.path, {{"cmd", "status"}})).find("internal error") == 0);
}

TEST_CASE("control server: destroying it waits for the handler and still delivers the reply to 'stop'")
{
    Fixture f;
    f.handler.respond = [](const json&) {
        std::this_thread::sleep_for(200ms);
        return json{{"ok", true}, {"state", "stopped"}};
    };
    auto stop = std::async(std::launch::async, [&] { return control_request(f.path, {{"cmd", "stop"}}, 5s); });
    REQUIRE(f.handler.wait_for_calls(1));
    UniqueFd idle = connect_raw(f.path);  // an idle client must not hold up the shutdown
    const auto t0 = std::chrono::steady_clock::now();
    f.server.reset();
    CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
    auto reply = stop.get();
    REQUIRE_MESSAGE(reply.ok(), (reply.ok() ? "" : reply.error().message()));
    CHECK(reply.value() == json{{"ok", true}, {"state", "stopped"}});
    CHECK(peer_closed(idle));
    CHECK(::access(f.path.c_str(), F_OK) != 0);
}

TEST_CASE("control client: clear errors for a missing socket, a timeout, a bad or missing reply")
{
    TempDir dir;
    const std::string missing = dir.path + "/none.sock";
    auto r = control_request(missing, {{"cmd", "status"}}, 1s);
    REQUIRE(!r.ok());
    CHECK(r.error().message() == "no VMM is listening on " + missing + " (no such socket)");

    // A listener that never answers (the backlog accepts the connection).
    const std::string path = dir.path + "/fake.sock";
    UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listener.get(), 8) == 0);
    const auto t0 = std::chrono::steady_clock::now();
    r = control_request(path, {{"cmd", "status"}}, 200ms);
    const auto waited = std::chrono::steady_clock::now() - t0;
    REQUIRE(!r.ok());
    CHECK(r.error().message() == "no reply from the VMM on " + path + " within 200 ms");
    CHECK(waited >= 190ms);
    CHECK(waited < 2s);

    // Fake servers answering garbage, or hanging up.
    auto serve_once = [&](std::string answer) {
        return std::async(std::launch::async, [&listener, answer] {
            UniqueFd c(::accept(listener.get(), nullptr, nullptr));
            char buf[256];
            (void)::recv(c.get(), buf, sizeof buf, 0);
            (void)::send(c.get(), answer.data(), answer.size(), MSG_NOSIGNAL);
        });
    };
    // Drain the connection the timeout test left in the backlog.
    { UniqueFd c(::accept(listener.get(), nullptr, nullptr)); }
    for (const auto& [answer, expected] : std::vector<std::pair<std::string, std::string>>{
             {"hello\n", "malformed reply from the VMM on " + path + ": "},
             {"[1,2]\n", "malformed reply from the VMM on " + path + ": not an object with \"ok\""},
             {"{\"ok\":\"yes\"}\n", "malformed reply from the VMM on " + path + ": not an object with \"ok\""},
             {"", "the VMM on " + path + " closed the connection without replying"},
             {"{\"ok\":tr", "the VMM on " + path + " closed the connection without finishing its reply"},
         }) {
        CAPTURE(answer);
        auto server = serve_once(answer);
        r = control_request(path, {{"cmd", "status"}}, 2s);
        server.get();
        REQUIRE(!r.ok());
        CHECK(r.error().message().find(expected) == 0);
    }
    auto server = serve_once("{\"ok\":false,\"error\":\"nope\"}\n");
    r = control_request(path, {{"cmd", "status"}}, 2s);
    server.get();
    REQUIRE(r.ok());  // a refusal is a reply, not a transport error
    CHECK(r.value()["error"] == "nope");
}

TEST_CASE("vvmm status/checkpoint: human-readable replies, missing fields left out")
{
    const json last = {{"ok", true},         {"id", "000003"},      {"path", "ckpts/a/000003"},
                       {"mode", "cow"},      {"incremental", true}, {"parent", "000002"},
                       {"pause_ms", 1.23},   {"total_ms", 310.44},  {"bytes_written", 180 * 1048576.0},
                       {"pages_written", 5}};
    CHECK(cli::describe_checkpoint(last) ==
          "checkpoint ckpts/a/000003: mode=cow pause=1.2 ms total=310.4 ms written=180.0 MiB (incremental, parent 000002)");
    CHECK(cli::describe_checkpoint({{"ok", true}, {"id", "000001"}, {"incremental", false}}) ==
          "checkpoint 000001: (full)");
    CHECK(cli::describe_checkpoint({{"ok", true}, {"pause_ms", "fast"}}) == "checkpoint ?:");

    const json status = {{"ok", true},         {"state", "running"}, {"cpus", 2},
                         {"mem_bytes", 536870912}, {"uptime_s", 12.34}, {"checkpoints", 3},
                         {"last_checkpoint", last}};
    CHECK(cli::describe_status(status) ==
          "running  cpus=2  mem=512 MiB  uptime=12.3 s  checkpoints=3  last=ckpts/a/000003 (cow, pause 1.2 ms, total 310 ms, 180 MiB)");
    CHECK(cli::describe_status({{"ok", true}, {"state", "paused"}}) == "paused");
    CHECK(cli::describe_status({{"ok", true}, {"cpus", "two"}, {"last_checkpoint", nullptr}}) == "unknown");
}
