#include "control/control_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <asio.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "vmm/base/json_field.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::control {

using nlohmann::json;
using local_stream = asio::local::stream_protocol;

namespace {

json error_reply(const std::string& message) { return {{"ok", false}, {"error", message}}; }

// One thread running jobs in order. Stopping lets queued jobs finish (only
// "status" calls can be queued) and refuses new ones.
class Worker {
public:
    Worker() : thread_([this] { loop(); }) {}
    ~Worker() { stop_and_join(); }

    bool post(std::function<void()> job)
    {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) return false;
            queue_.push_back(std::move(job));
        }
        cv_.notify_one();
        return true;
    }

    void stop_and_join()
    {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        cv_.notify_one();
        if (thread_.joinable()) thread_.join();
    }

private:
    void loop()
    {
        for (;;) {
            std::function<void()> job;
            {
                std::unique_lock lock(mutex_);
                cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;
                job = std::move(queue_.front());
                queue_.pop_front();
            }
            job();
        }
    }

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool stopping_ = false;
    std::thread thread_;
};

struct Connection {
    explicit Connection(local_stream::socket s) : socket(std::move(s)) {}
    local_stream::socket socket;
    std::string in;   // bytes read, not yet consumed as lines
    std::string out;  // the reply being written
    bool busy = false;  // a request is being handled or its reply written
};
using ConnectionPtr = std::shared_ptr<Connection>;

Result<void> make_directories(const std::string& dir)
{
    if (dir.empty()) return ok();
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return Error(dir + " is not a directory");
        return ok();
    }
    const auto slash = dir.find_last_of('/');
    if (slash != std::string::npos && slash > 0) TRY(make_directories(dir.substr(0, slash)));
    // 0700: the directory of a control socket is nobody else's business.
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno_error("creating " + dir);
    return ok();
}

Result<sockaddr_un> unix_address(const std::string& path)
{
    sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    if (path.empty()) return Error("the control socket path is empty");
    if (path.size() >= sizeof(addr.sun_path))
        return Error("control socket path is too long (" + std::to_string(path.size()) + " bytes, at most " +
                     std::to_string(sizeof(addr.sun_path) - 1) + "): " + path);
    std::memcpy(addr.sun_path, path.c_str(), path.size());
    return addr;
}

// Whether something accepts connections on the socket file at `path`.
Result<bool> someone_listens(const sockaddr_un& addr, const std::string& path)
{
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd.valid()) return errno_error("socket");
    if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return true;
    if (errno == EAGAIN) return true;  // backlog full: alive, just busy
    if (errno == ECONNREFUSED) return false;
    return errno_error("checking whether a VMM listens on " + path);
}

}  // namespace

struct ControlServer::Impl {
    Impl(std::string p, ControlHandler& h) : path(std::move(p)), handler(h) {}

    std::string path;
    ControlHandler& handler;
    dev_t socket_dev = 0;  // identity of the socket file we bound, so we
    ino_t socket_ino = 0;  // never unlink one a newer VMM put there

    asio::io_context io;
    local_stream::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{io.get_executor()};
    std::thread io_thread;
    std::promise<void> io_done;

    // io-thread state
    std::set<ConnectionPtr> connections;
    bool stopping = false;
    bool command_running = false;
    std::string running_command;
    std::chrono::steady_clock::time_point command_started;

    // "status" and the state-changing commands have a thread each, so a
    // status is answered while a checkpoint runs. Declared last: destroyed
    // (joined) first, while everything their jobs touch still exists.
    Worker query_worker;
    Worker command_worker;

    void start()
    {
        start_accept();
        io_thread = std::thread([this] {
            io.run();
            io_done.set_value();
        });
    }

    void start_accept()
    {
        acceptor.async_accept([this](std::error_code ec, local_stream::socket socket) {
            if (ec == asio::error::operation_aborted || stopping) return;
            if (ec) {
                // Out of fds, most likely: try again a little later instead of spinning.
                log_warn("control socket " + path + ": accept: " + ec.message());
                accept_retry.expires_after(std::chrono::milliseconds(100));
                accept_retry.async_wait([this](std::error_code e) {
                    if (!e && !stopping) start_accept();
                });
                return;
            }
            auto conn = std::make_shared<Connection>(std::move(socket));
            const bool too_many = connections.size() >= kMaxConnections;
            connections.insert(conn);
            if (too_many)
                send(conn, error_reply("too many control connections (at most " + std::to_string(kMaxConnections) + ")"),
                     true);
            else
                read_next(conn);
            start_accept();
        });
    }

    void close(const ConnectionPtr& conn)
    {
        std::error_code ignored;
        conn->socket.close(ignored);
        connections.erase(conn);
    }

    void read_next(const ConnectionPtr& conn)
    {
        conn->busy = false;
        if (stopping) return close(conn);
        // +1: room for the '\n' that ends a line of exactly kMaxRequestLine bytes.
        asio::async_read_until(conn->socket, asio::dynamic_buffer(conn->in, kMaxRequestLine + 1), '\n',
                               [this, conn](std::error_code ec, size_t n) {
                                   if (ec == asio::error::not_found) {
                                       conn->busy = true;
                                       return send(conn,
                                                   error_reply("request line longer than " +
                                                               std::to_string(kMaxRequestLine) + " bytes"),
                                                   true);
                                   }
                                   if (ec) return close(conn);  // EOF, reset, or closed by shutdown
                                   std::string line = conn->in.substr(0, n - 1);
                                   conn->in.erase(0, n);
                                   if (!line.empty() && line.back() == '\r') line.pop_back();
                                   conn->busy = true;
                                   on_line(conn, line);
                               });
    }

    void on_line(const ConnectionPtr& conn, const std::string& line)
    {
        if (line.find_first_not_of(" \t") == std::string::npos) return send(conn, error_reply("empty request"));
        auto parsed = parse_json(line);
        if (!parsed) return send(conn, error_reply("malformed request: " + parsed.error().message()));
        auto valid = parse_control_request(parsed.value());
        if (!valid) return send(conn, error_reply(valid.error().message()));
        ControlRequest request = std::move(valid).value();

        const bool is_query = request.cmd == ControlCommand::status;
        if (!is_query) {
            if (command_running) {
                const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - command_started).count();
                char since[32];
                std::snprintf(since, sizeof since, "%.1f", secs);
                return send(conn, error_reply("busy: " + running_command + " in progress (for " + since +
                                              " s); try again when it has finished"));
            }
            command_running = true;
            running_command = command_name(request.cmd);
            command_started = std::chrono::steady_clock::now();
        }
        Worker& worker = is_query ? query_worker : command_worker;
        const bool posted = worker.post([this, conn, request = std::move(request), is_query] {
            json reply = call_handler(request);
            asio::post(io, [this, conn, reply = std::move(reply), is_query] {
                if (!is_query) command_running = false;
                send(conn, reply);
            });
        });
        if (!posted) {
            if (!is_query) command_running = false;
            send(conn, error_reply("the VMM is shutting down"));
        }
    }

    json call_handler(const ControlRequest& request)
    {
        try {
            json reply = handler.handle(request);
            const auto it = reply.is_object() ? reply.find("ok") : reply.end();
            if (it == reply.end() || !it->is_boolean())
                return error_reply("internal error: the VMM's reply has no \"ok\"");
            return reply;
        } catch (const std::exception& e) {
            return error_reply(std::string("internal error: ") + e.what());
        }
    }

    void send(const ConnectionPtr& conn, const json& reply, bool close_after = false)
    {
        // replace: a non-UTF-8 byte from anywhere must not make dump() throw.
        conn->out = reply.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
        asio::async_write(conn->socket, asio::buffer(conn->out), [this, conn, close_after](std::error_code ec, size_t) {
            if (ec || close_after) return close(conn);
            read_next(conn);
        });
    }

    // Runs on the io thread once the workers are joined: answers still being
    // written go out, idle connections are closed, then run() returns.
    void shut_down()
    {
        stopping = true;
        std::error_code ignored;
        acceptor.close(ignored);
        accept_retry.cancel();
        for (const auto& conn : std::vector<ConnectionPtr>(connections.begin(), connections.end()))
            if (!conn->busy) close(conn);
    }
};

Result<std::unique_ptr<ControlServer>> ControlServer::create(const std::string& socket_path, ControlHandler& handler)
{
    TRY_ASSIGN(const sockaddr_un addr, unix_address(socket_path));
    const auto slash = socket_path.find_last_of('/');
    if (slash != std::string::npos && slash > 0)
        if (auto made = make_directories(socket_path.substr(0, slash)); !made)
            return made.error().context("control socket");

    struct stat st {};
    if (::lstat(socket_path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return Error("control socket: " + socket_path + " exists and is not a socket; not replacing it");
        TRY_ASSIGN(const bool alive, someone_listens(addr, socket_path));
        if (alive) return Error("control socket: another VMM is already listening on " + socket_path);
        // A VMM that died without cleaning up left it behind.
        if (::unlink(socket_path.c_str()) != 0 && errno != ENOENT)
            return errno_error("control socket: removing stale " + socket_path);
        log_info("removed stale control socket " + socket_path);
    }

    auto impl = std::make_unique<Impl>(socket_path, handler);
    auto& acceptor = impl->acceptor;
    std::error_code ec;
    acceptor.open(local_stream(), ec);
    if (ec) return Error("control socket: socket: " + ec.message());
    const int fd = acceptor.native_handle();
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    // On Linux bind() creates the file with the socket inode's mode (minus
    // umask): set it first so there is no moment where others may connect.
    if (::fchmod(fd, 0600) != 0) return errno_error("control socket: fchmod");
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
        return errno_error("control socket: binding " + socket_path);
    auto unlink_on_error = [&](Error e) {
        ::unlink(socket_path.c_str());
        return e;
    };
    if (::chmod(socket_path.c_str(), 0600) != 0) return unlink_on_error(errno_error("control socket: chmod " + socket_path));
    if (::stat(socket_path.c_str(), &st) != 0) return unlink_on_error(errno_error("control socket: stat " + socket_path));
    impl->socket_dev = st.st_dev;
    impl->socket_ino = st.st_ino;
    acceptor.listen(16, ec);
    if (ec) return unlink_on_error(Error("control socket: listen: " + ec.message()));
    impl->start();
    return std::unique_ptr<ControlServer>(new ControlServer(std::move(impl)));
}

ControlServer::ControlServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

const std::string& ControlServer::socket_path() const { return impl_->path; }

ControlServer::~ControlServer()
{
    Impl& s = *impl_;
    // Handler calls in progress finish (a checkpoint is never cut short) and
    // post their replies; new requests are refused from here on.
    s.query_worker.stop_and_join();
    s.command_worker.stop_and_join();
    asio::post(s.io, [&s] { s.shut_down(); });
    s.work.reset();
    if (s.io_done.get_future().wait_for(std::chrono::seconds(2)) != std::future_status::ready) s.io.stop();
    s.io_thread.join();

    struct stat st {};
    if (::stat(s.path.c_str(), &st) == 0 && st.st_dev == s.socket_dev && st.st_ino == s.socket_ino)
        ::unlink(s.path.c_str());
}

}  // namespace vvmm::control
