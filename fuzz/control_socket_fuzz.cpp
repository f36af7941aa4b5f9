// libFuzzer target: the control socket protocol, end to end through the real
// ControlServer (control/control_server.cpp: line framing, JSON parsing,
// control/control_request.cpp: validation, dispatch to the worker threads,
// replies) on a Unix socket in /dev/shm, with a fake handler. Input: one
// byte of options (how the fake handler answers; whether an overlong line
// or a deeply nested one follows), then the bytes a client sends on one
// connection before it shuts down its sending side.
// A bug is a crash, a sanitizer report, a hang (no answer within seconds), or:
//  - the handler called with a request that is not valid (a dir that is
//    empty or holds NUL, a field of another command) or for a line the
//    server should have refused, or not called for a valid one;
//  - not exactly one reply per request line, in order (and one error for an
//    overlong line, after which the connection closes);
//  - a reply that is not one line of JSON object with a boolean "ok" (and an
//    "error" string when it is false), or that says ok for a refused line or
//    for a handler reply that is not an object with a boolean "ok".
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "control/control_server.hpp"
#include "fuzz/support/fuzz_platform.hpp"
#include "vmm/base/log.hpp"

using namespace vvmm;
using fuzz::check;
using nlohmann::json;

namespace {

// How the handler answers (the input's first byte, bits 0..2).
enum class Answer { normal, no_ok, throws, not_object, bad_utf8, ok_not_bool };
bool answer_is_ok(Answer a) { return a == Answer::normal || a == Answer::bad_utf8; }

class FakeHandler : public control::ControlHandler {
public:
    std::atomic<Answer> answer{Answer::normal};
    std::atomic<size_t> calls{0};

    json handle(const control::ControlRequest& r) override
    {
        ++calls;
        check(static_cast<unsigned>(r.cmd) <= static_cast<unsigned>(control::ControlCommand::stop), "a request with an unknown command");
        if (r.cmd == control::ControlCommand::checkpoint) {
            // No "dir" is allowed (the VM's --checkpoint-dir); an empty one given is refused, so empty = absent.
            check(r.dir.find('\0') == std::string::npos, "a checkpoint request with a bad dir");
            check(static_cast<unsigned>(r.mode) <= static_cast<unsigned>(ckpt::CheckpointMode::cow), "a checkpoint request with an unknown mode");
        } else {
            check(r.dir.empty() && r.mode == ckpt::CheckpointMode::stop && !r.incremental, "fields on a command that has none");
        }
        // to_json is what the CLI sends: it must parse back to the same request.
        auto again = control::parse_control_request(control::to_json(r));
        check(again.ok() && again.value().cmd == r.cmd && again.value().dir == r.dir && again.value().mode == r.mode &&
                  again.value().incremental == r.incremental,
              "a request does not survive to_json and parsing again");
        switch (answer.load()) {
        case Answer::normal: return {{"ok", true}, {"state", "running"}, {"dir", r.dir}};
        case Answer::no_ok: return {{"state", "running"}};
        case Answer::throws: throw std::runtime_error("handler failed");
        case Answer::not_object: return json::array({true});
        case Answer::bad_utf8: return {{"ok", true}, {"text", std::string("\xff\xfe bad \xc3")}};
        case Answer::ok_not_bool: return {{"ok", "yes"}};
        }
        return {};
    }
};

struct Server {
    FakeHandler handler;
    std::unique_ptr<control::ControlServer> server;
    Server()
    {
        auto s = control::ControlServer::create(fuzz::scratch_dir("ctl") + "/ctl.sock", handler);
        if (!s) {
            std::fprintf(stderr, "control server: %s\n", s.error().message().c_str());
            std::abort();
        }
        server = std::move(s).value();
    }
};

Server& server()
{
    static Server s;
    return s;
}

// Sends `out` on a fresh connection, shuts down the sending side, returns all it got back.
std::string exchange(const std::string& out)
{
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    check(fd >= 0, "socket");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = server().server->socket_path();
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    check(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0, "connect to the control socket");
    std::string in;
    size_t sent = 0;
    bool shut = false;
    for (;;) {
        if (!shut && sent == out.size()) {
            ::shutdown(fd, SHUT_WR);
            shut = true;
        }
        pollfd p{fd, short(POLLIN | (shut ? 0 : POLLOUT)), 0};
        const int r = ::poll(&p, 1, 10000);
        if (r < 0 && errno == EINTR) continue;  // libFuzzer's SIGALRM (-timeout)
        check(r > 0, "the control server does not answer (10 s)");
        if (!shut && (p.revents & POLLOUT)) {
            const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
            if (n > 0) sent += size_t(n);
            else if (n < 0 && errno != EAGAIN) sent = out.size();  // the server closed: stop sending
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[65536];
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n > 0) in.append(buf, size_t(n));
            else if (n == 0 || errno != EAGAIN) break;
        }
    }
    ::close(fd);
    return in;
}

// What the server must make of one line (without its '\n').
bool is_valid_request(std::string line)
{
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) return false;
    auto j = json::parse(line, nullptr, false);
    if (j.is_discarded()) return false;
    return control::parse_control_request(j).ok();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : LogLevel::error);
    (void)server();
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    const Answer answer = static_cast<Answer>(data[0] % 6);
    std::string out(reinterpret_cast<const char*>(data + 1), size - 1);
    // Lines longer than fuzz inputs get: deeply nested JSON (the server
    // parses any nesting a line can hold; 64 KiB of '[' takes ~0.3 s here,
    // so the fuzzer gets 4 KiB), or a line over the limit (the connection
    // must close after one error, whatever follows).
    if ((data[0] >> 3) % 8 == 1) out += std::string(4096, '[') + "\n";
    if ((data[0] >> 3) % 8 == 2) out += std::string(control::kMaxRequestLine + 1, 'x') + "\n" + R"({"cmd":"status"})" + "\n";

    // The lines the server frames, and whether each is a request the handler must see.
    std::vector<bool> expected;
    bool overlong = false;
    for (size_t at = 0; at < out.size();) {
        const size_t nl = out.find('\n', at);
        if (nl == std::string::npos) break;  // no '\n' before EOF: not a line
        if (nl - at > control::kMaxRequestLine) {
            overlong = true;
            break;
        }
        expected.push_back(is_valid_request(out.substr(at, nl - at)));
        at = nl + 1;
    }

    Server& s = server();
    s.handler.answer = answer;
    const size_t calls_before = s.handler.calls;
    const std::string in = exchange(out);

    std::vector<std::string> replies;
    for (size_t at = 0; at < in.size();) {
        const size_t nl = in.find('\n', at);
        check(nl != std::string::npos, "a reply without its '\\n'");
        replies.push_back(in.substr(at, nl - at));
        at = nl + 1;
    }
    check(replies.size() == expected.size() + (overlong ? 1 : 0), "not one reply per request line");
    for (size_t i = 0; i < replies.size(); ++i) {
        const json r = json::parse(replies[i], nullptr, false);
        check(r.is_object() && r.contains("ok") && r["ok"].is_boolean(), "a reply that is not an object with a boolean ok");
        const bool ok = r["ok"].get<bool>();
        if (!ok) check(r.contains("error") && r["error"].is_string(), "a refusal without an error string");
        const bool should_be_ok = i < expected.size() && expected[i] && answer_is_ok(answer);
        check(ok == should_be_ok, "a reply's ok differs from what the request and the handler's answer make it");
    }
    size_t valid = 0;
    for (bool v : expected) valid += v;
    check(s.handler.calls - calls_before == valid, "the handler was not called exactly once per valid request");
    return 0;
}
