#include "control/control_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "vmm/base/json_field.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::control {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// Replies are small; this only stops a confused peer from eating memory.
constexpr size_t kMaxReply = 16 * 1024 * 1024;

std::string describe(std::chrono::milliseconds t)
{
    if (t.count() % 1000 == 0) return std::to_string(t.count() / 1000) + " s";
    return std::to_string(t.count()) + " ms";
}

// Waits until fd is ready for `events` or the deadline passes.
Result<void> wait_ready(int fd, short events, Clock::time_point deadline, const std::string& timeout_message)
{
    for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) return Error(timeout_message);
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
        if (n > 0) return ok();
        if (n < 0 && errno != EINTR) return errno_error("poll");
    }
}

}  // namespace

Result<json> control_request(const std::string& socket_path, const json& request, std::chrono::milliseconds timeout)
{
    const auto deadline = Clock::now() + timeout;
    const std::string timed_out = "no reply from the VMM on " + socket_path + " within " + describe(timeout);

    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (socket_path.empty()) return Error("the control socket path is empty");
    if (socket_path.size() >= sizeof(addr.sun_path)) return Error("control socket path is too long: " + socket_path);
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size());

    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return errno_error("socket");
    for (;;) {
        if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) break;
        const int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN) {
            // The server's backlog is full; a Unix socket does not queue the
            // attempt, so try again until the deadline.
            if (Clock::now() >= deadline) return Error("timed out connecting to the VMM on " + socket_path);
            ::poll(nullptr, 0, 10);
            continue;
        }
        if (err == ENOENT) return Error("no VMM is listening on " + socket_path + " (no such socket)");
        if (err == ECONNREFUSED)
            return Error("no VMM is listening on " + socket_path + " (connection refused: a stale socket or not a socket)");
        if (err == EACCES)
            // Even root's vvmm has dropped CAP_DAC_OVERRIDE by now.
            return Error("connecting to " + socket_path + ": Permission denied (a VMM started with --user NAME is "
                         "reached as NAME: vvmm --user NAME ...)");
        return errno_error("connecting to " + socket_path, err);
    }

    // dump() escapes newlines inside strings, so this is exactly one line.
    const std::string line = request.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    for (size_t sent = 0; sent < line.size();) {
        const ssize_t n = ::send(fd.get(), line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
        if (n > 0) {
            sent += static_cast<size_t>(n);
        } else if (errno == EAGAIN) {
            TRY(wait_ready(fd.get(), POLLOUT, deadline, timed_out));
        } else if (errno != EINTR) {
            return errno_error("sending to the VMM on " + socket_path);
        }
    }

    std::string reply;
    size_t newline;
    for (;;) {
        char buf[4096];
        const ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n > 0) {
            const size_t scan_from = reply.size();
            reply.append(buf, static_cast<size_t>(n));
            if ((newline = reply.find('\n', scan_from)) != std::string::npos) break;
            if (reply.size() > kMaxReply) return Error("reply from the VMM on " + socket_path + " is too long");
        } else if (n == 0) {
            return Error("the VMM on " + socket_path + " closed the connection without " +
                         (reply.empty() ? "replying" : "finishing its reply"));
        } else if (errno == EAGAIN) {
            TRY(wait_ready(fd.get(), POLLIN, deadline, timed_out));
        } else if (errno != EINTR) {
            return errno_error("reading from the VMM on " + socket_path);
        }
    }
    reply.resize(newline);

    auto document = parse_json(reply);
    if (!document) return Error("malformed reply from the VMM on " + socket_path + ": " + document.error().message());
    json parsed = std::move(document).value();
    const auto it = parsed.is_object() ? parsed.find("ok") : parsed.end();
    if (it == parsed.end() || !it->is_boolean())
        return Error("malformed reply from the VMM on " + socket_path + ": not an object with \"ok\"");
    return parsed;
}

}  // namespace vvmm::control
