#include "net/peer_mesh.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio.hpp>

#include "net/mac_table.hpp"
#include "net/peer_protocol.hpp"
#include "net/send_queue.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::net {
namespace {

using asio::ip::tcp;

constexpr size_t kReadChunk = 16 * 1024;
// Connections that have not sent their HELLO yet: a bound, so that a local
// process opening connections cannot make the mesh hold unbounded memory.
constexpr size_t kMaxInboundHandshakes = 16;
constexpr std::chrono::milliseconds kAcceptRetry{100};

tcp::endpoint to_endpoint(const SocketAddress& a)
{
    if (a.family() == SocketAddress::Family::ipv4) {
        asio::ip::address_v4::bytes_type b;
        std::copy_n(a.address().begin(), b.size(), b.begin());
        return {asio::ip::address_v4(b), a.port()};
    }
    asio::ip::address_v6::bytes_type b;
    std::copy_n(a.address().begin(), b.size(), b.begin());
    return {asio::ip::address_v6(b), a.port()};
}

std::string to_string(const tcp::endpoint& e)
{
    std::error_code ec;
    const std::string host = e.address().to_string(ec);
    return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

struct Peer;

enum class Stage { connecting, awaiting_hello, established };

// One TCP connection, from connect or accept until it is closed. Handlers
// hold a shared_ptr to it, so its socket and buffers outlive every operation
// on them; a handler whose connection is closed, or no longer its peer's
// current one, is stale and does nothing.
struct Connection {
    Connection(asio::io_context& io, tcp::socket s) : socket(std::move(s)), deadline(io) {}

    tcp::socket socket;
    asio::steady_timer deadline;  // for the connect, then for the HELLO
    Stage stage = Stage::connecting;
    Peer* peer = nullptr;  // null while an accepted connection is not identified yet
    std::string remote;    // for logs about unidentified connections
    MessageDecoder decoder;
    std::array<uint8_t, kReadChunk> read_buffer;
    std::vector<uint8_t> writing;  // the batch being written
    bool reading = false;
    bool write_in_flight = false;
    bool closed = false;
};

struct Peer {
    Peer(asio::io_context& io, size_t i, const SocketAddress& a, bool dial, size_t queue_limit)
        : index(i), address(a), endpoint(to_endpoint(a)), we_dial(dial), retry_timer(io), name(a.to_string()),
          queue(queue_limit)
    {
    }

    const size_t index;
    const SocketAddress address;
    const tcp::endpoint endpoint;
    const bool we_dial;

    // Network thread only.
    std::shared_ptr<Connection> conn;  // connecting, in handshake or established
    asio::steady_timer retry_timer;
    std::chrono::milliseconds backoff{0};
    bool reported_unreachable = false;
    std::optional<std::vector<uint8_t>> held;  // refused by the sink; offered again before anything else
    std::string name;                          // "b at 127.0.0.1:7002" once its HELLO came

    // Guarded by State::mutex.
    SendQueue queue;
    bool linked = false;         // established: the queue drains
    bool writer_active = false;  // a write is in flight or about to be started
    // The established connection's socket, for try_send()'s direct send;
    // -1 otherwise. Cleared (under the lock) before the socket is closed.
    int direct_fd = -1;
    bool staged = false;  // frames held for end_batch()'s single write
};

}  // namespace

struct PeerMesh::State {
    State(const PeerNetSpec& s, const PeerMeshLimits& l);

    Result<void> open_acceptor();
    void run();
    // TODO(lead): the configured cluster name and a random_nonce() per
    // connection, checked with AUTH (peer_protocol.hpp). Until then every
    // VMM says it belongs to "default" and nothing is authenticated.
    Hello own_hello() const
    {
        return Hello{.role = PeerRole::peer, .mac = spec.mac, .listen = spec.listen, .id = spec.id,
                     .cluster = "default", .nonce = {}};
    }

    // Connections (network thread).
    void start_accept();
    void on_accepted(tcp::socket socket);
    void dial(Peer& p);
    void schedule_redial(Peer& p);
    void arm_deadline(const std::shared_ptr<Connection>& conn, std::chrono::milliseconds timeout, std::string what);
    void fail(std::shared_ptr<Connection> conn, const std::string& reason, LogLevel level);
    static std::string describe(const Connection& conn);

    // Receiving (network thread).
    void start_read(std::shared_ptr<Connection> conn);
    void drain(std::shared_ptr<Connection> conn);
    void on_hello(std::shared_ptr<Connection> conn, const Hello& hello);
    void establish(const std::shared_ptr<Connection>& conn, const Hello& hello);
    void on_frame(Peer& p, std::vector<uint8_t> frame);
    void resume_receive();

    // Sending.
    bool try_send(std::span<const uint8_t> frame);  // any thread
    void direct_send(Peer& p, std::span<const uint8_t> frame);
    void flush_staged(Peer& p);
    void start_write(Peer& p);
    void on_written(Peer& p, const std::shared_ptr<Connection>& conn, std::error_code ec);
    void maybe_transmit_ready();

    void stop();

    // Destroyed last: sockets and timers must go before their io_context.
    asio::io_context io;
    tcp::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    const PeerNetSpec spec;
    const PeerMeshLimits limits;
    std::vector<std::unique_ptr<Peer>> peers;  // stable addresses: handlers refer to them
    std::vector<std::shared_ptr<Connection>> inbound;
    size_t resume_cursor = 0;  // where receive_ready() starts, so no peer is always last
    FrameSink* sink = nullptr;

    std::mutex lifecycle_mutex;
    bool started = false;
    bool stopped = false;
    std::thread thread;

    // Shared with try_send() on the device's thread.
    mutable std::mutex mutex;
    MacTable mac_table;
    bool tx_blocked = false;  // try_send() refused; transmit_ready() is owed
    std::vector<uint8_t> direct_buffer;  // direct_send()'s encoding buffer
    bool batching = false;               // between begin_batch() and end_batch()
    bool closed_for_send = false;

    RateLimitedLog guest_log;
    RateLimitedLog drop_log;
    RateLimitedLog accept_log;
};

PeerMesh::State::State(const PeerNetSpec& s, const PeerMeshLimits& l) : spec(s), limits(l)
{
    for (size_t i = 0; i < spec.peers.size(); ++i) {
        // The lower listen address dials: both sides compute the same answer.
        const bool we_dial = spec.listen < spec.peers[i];
        peers.push_back(std::make_unique<Peer>(io, i, spec.peers[i], we_dial, limits.send_queue_bytes));
        peers.back()->backoff = limits.backoff_initial;
    }
}

Result<void> PeerMesh::State::open_acceptor()
{
    const tcp::endpoint endpoint = to_endpoint(spec.listen);
    const std::string what = "cannot listen on " + spec.listen.to_string();
    std::error_code ec;
    acceptor.open(endpoint.protocol(), ec);
    if (ec) return Error(what + ": " + ec.message());
    // A restarted VMM must be able to listen again while its old
    // connections linger in TIME_WAIT.
    acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Error(what + ": " + ec.message());
    return ok();
}

void PeerMesh::State::run()
{
    auto work = asio::make_work_guard(io);
    try {
        io.run();
    } catch (const std::exception& e) {
        log_error(std::string("network thread stopped: ") + e.what());
    }
}

// ---- connections ------------------------------------------------------------

void PeerMesh::State::start_accept()
{
    acceptor.async_accept([this](std::error_code ec, tcp::socket socket) {
        if (ec == asio::error::operation_aborted) return;
        if (ec) {
            // E.g. out of file descriptors: try again a little later rather than spin.
            accept_log.warn("accepting a peer connection on " + spec.listen.to_string() + " failed: " + ec.message());
            accept_retry.expires_after(kAcceptRetry);
            accept_retry.async_wait([this](std::error_code e) {
                if (!e) start_accept();
            });
            return;
        }
        on_accepted(std::move(socket));
        start_accept();
    });
}

void PeerMesh::State::on_accepted(tcp::socket socket)
{
    std::error_code ec;
    const std::string remote = to_string(socket.remote_endpoint(ec));
    if (inbound.size() >= kMaxInboundHandshakes) {
        accept_log.warn("refusing a connection from " + remote + ": too many connections have not sent HELLO yet");
        return;  // closing `socket`
    }
    socket.set_option(tcp::no_delay(true), ec);
    auto conn = std::make_shared<Connection>(io, std::move(socket));
    conn->remote = remote;
    conn->stage = Stage::awaiting_hello;
    inbound.push_back(conn);
    arm_deadline(conn, limits.handshake_timeout, "no HELLO");
    start_read(conn);
}

void PeerMesh::State::dial(Peer& p)
{
    auto conn = std::make_shared<Connection>(io, tcp::socket(io));
    conn->peer = &p;
    p.conn = conn;
    arm_deadline(conn, limits.connect_timeout, "no connection");
    conn->socket.async_connect(p.endpoint, [this, conn](std::error_code ec) {
        if (conn->closed) return;
        if (ec) {
            Peer& peer = *conn->peer;
            // A peer that is not up yet is normal while a cluster boots: say it once.
            const LogLevel level = peer.reported_unreachable ? LogLevel::debug : LogLevel::info;
            peer.reported_unreachable = true;
            fail(conn, "cannot connect (" + ec.message() + "); retrying", level);
            return;
        }
        std::error_code ignored;
        conn->socket.set_option(tcp::no_delay(true), ignored);
        // A HELLO fits in a fresh connection's empty socket buffer, so this
        // write does not block; doing it synchronously keeps the handshake
        // free of a write-in-flight state.
        std::vector<uint8_t> hello;
        append_hello(hello, own_hello());
        asio::write(conn->socket, asio::buffer(hello), ec);
        if (ec) {
            fail(conn, "sending HELLO: " + ec.message(), LogLevel::warn);
            return;
        }
        conn->stage = Stage::awaiting_hello;
        arm_deadline(conn, limits.handshake_timeout, "no HELLO");
        start_read(conn);
    });
}

void PeerMesh::State::schedule_redial(Peer& p)
{
    const auto delay = p.backoff;
    p.backoff = std::min(p.backoff * 2, limits.backoff_max);
    p.retry_timer.expires_after(delay);
    p.retry_timer.async_wait([this, &p](std::error_code ec) {
        if (!ec && !p.conn) dial(p);
    });
}

void PeerMesh::State::arm_deadline(const std::shared_ptr<Connection>& conn, std::chrono::milliseconds timeout,
                                   std::string what)
{
    conn->deadline.expires_after(timeout);
    conn->deadline.async_wait([this, conn, what = std::move(what), timeout](std::error_code ec) {
        if (ec || conn->closed || conn->stage == Stage::established) return;
        fail(conn, what + " within " + std::to_string(timeout.count()) + " ms", LogLevel::warn);
    });
}

std::string PeerMesh::State::describe(const Connection& conn)
{
    return conn.peer ? "peer " + conn.peer->name : "connection from " + conn.remote;
}

// Closes `conn` and, if it was its peer's current connection, puts the peer
// back to "not connected": its queue keeps filling (bounded) until the next
// connection, and the dialing side redials.
void PeerMesh::State::fail(std::shared_ptr<Connection> conn, const std::string& reason, LogLevel level)
{
    if (conn->closed) return;
    conn->closed = true;
    if (conn->peer && conn->peer->conn == conn) {
        // No direct send may use this fd once it is closed (and maybe reused).
        std::lock_guard lock(mutex);
        conn->peer->direct_fd = -1;
    }
    std::error_code ignored;
    conn->socket.close(ignored);
    conn->deadline.cancel();
    Peer* p = conn->peer;
    if (!p) {
        std::erase(inbound, conn);
        log_line(level, describe(*conn) + ": " + reason);
        return;
    }
    if (p->conn != conn) return;
    const bool was_established = conn->stage == Stage::established;
    p->conn.reset();
    {
        std::lock_guard lock(mutex);
        p->linked = false;
        p->writer_active = false;
        p->queue.batch_done();  // the batch in flight is lost with the connection
        mac_table.forget_peer(p->index);
    }
    if (was_established)
        log_line(level, "lost connection to peer " + p->name + ": " + reason +
                            (p->we_dial ? "; reconnecting" : "; waiting for it to reconnect"));
    else
        log_line(level, describe(*conn) + ": " + reason);
    if (p->we_dial) schedule_redial(*p);
    // A peer that is not connected no longer refuses frames.
    maybe_transmit_ready();
}

// ---- receiving --------------------------------------------------------------

void PeerMesh::State::start_read(std::shared_ptr<Connection> conn)
{
    if (conn->closed || conn->reading) return;
    conn->reading = true;
    conn->socket.async_read_some(asio::buffer(conn->read_buffer), [this, conn](std::error_code ec, size_t n) {
        conn->reading = false;
        if (conn->closed) return;
        if (ec == asio::error::eof) {
            const bool handshake = conn->stage != Stage::established;
            fail(conn,
                 handshake ? "closed during the handshake (does it speak protocol version " +
                                 std::to_string(kProtocolVersion) + "? see its log)"
                           : "closed by the peer",
                 conn->peer ? LogLevel::warn : LogLevel::debug);
            return;
        }
        if (ec) {
            fail(conn, "receive failed: " + ec.message(), LogLevel::warn);
            return;
        }
        conn->decoder.feed(std::span<const uint8_t>(conn->read_buffer.data(), n));
        drain(conn);
    });
}

// Handles every complete message the decoder holds, then reads more, unless
// the sink refused a frame: then the connection stays unread (TCP pushes back
// on the sender) until resume_receive().
void PeerMesh::State::drain(std::shared_ptr<Connection> conn)
{
    for (;;) {
        if (conn->closed) return;
        if (conn->stage == Stage::established && conn->peer->held) return;
        auto next = conn->decoder.next();
        if (!next.ok()) {
            fail(conn, "protocol error: " + next.error().message() + "; closing the connection", LogLevel::error);
            return;
        }
        if (!next.value()) break;
        Message& message = *next.value();
        if (const Hello* hello = std::get_if<Hello>(&message)) {
            on_hello(conn, *hello);
        } else if (conn->stage != Stage::established) {
            fail(conn, "protocol error: a " + std::string(message_name(message)) + " came before HELLO",
                 LogLevel::error);
        } else if (FrameMessage* frame = std::get_if<FrameMessage>(&message)) {
            on_frame(*conn->peer, std::move(frame->frame));
        } else {
            fail(conn, "protocol error: " + std::string(message_name(message)) + " is not handled by this VMM yet",
                 LogLevel::error);
        }
    }
    start_read(conn);
}

void PeerMesh::State::on_hello(std::shared_ptr<Connection> conn, const Hello& hello)
{
    if (conn->stage != Stage::awaiting_hello) {
        fail(conn, "protocol error: a second HELLO", LogLevel::error);
        return;
    }
    const std::string who = "'" + hello.id + "' listening on " + hello.listen.to_string();
    if (hello.id == spec.id) {
        fail(conn, "refused: " + who + " has this VMM's own id", LogLevel::error);
        return;
    }
    if (conn->peer) {  // we dialed: the peer must be the one we meant
        if (hello.listen != conn->peer->address) {
            fail(conn, "refused: the VMM there says it is " + who, LogLevel::error);
            return;
        }
        establish(conn, hello);
        return;
    }
    const auto it = std::find_if(peers.begin(), peers.end(), [&](const auto& p) { return p->address == hello.listen; });
    if (it == peers.end()) {
        fail(conn, "refused: " + who + " is not one of this VMM's peers", LogLevel::error);
        return;
    }
    Peer& p = **it;
    if (p.we_dial) {
        fail(conn, "refused: " + who + " dialed this VMM, but this VMM dials it (the lower listen address dials)",
             LogLevel::error);
        return;
    }
    std::erase(inbound, conn);
    if (p.conn) fail(p.conn, "replaced by a new connection from the same peer", LogLevel::info);
    conn->peer = &p;
    p.conn = conn;
    std::vector<uint8_t> reply;
    append_hello(reply, own_hello());
    std::error_code ec;
    asio::write(conn->socket, asio::buffer(reply), ec);  // non-blocking in practice: see dial()
    if (ec) {
        fail(conn, "sending HELLO: " + ec.message(), LogLevel::warn);
        return;
    }
    establish(conn, hello);
}

void PeerMesh::State::establish(const std::shared_ptr<Connection>& conn, const Hello& hello)
{
    Peer& p = *conn->peer;
    conn->stage = Stage::established;
    conn->deadline.cancel();
    p.name = "'" + hello.id + "' at " + p.address.to_string();
    p.backoff = limits.backoff_initial;
    p.reported_unreachable = false;
    {
        std::lock_guard lock(mutex);
        p.linked = true;
        p.direct_fd = conn->socket.native_handle();
        mac_table.pin(hello.mac, p.index);
    }
    log_info("connected to peer " + p.name + " (guest MAC " + hello.mac.to_string() + ")");
    if (hello.mac == spec.mac)
        log_warn("peer " + p.name + " has the same guest MAC as this VM (" + hello.mac.to_string() +
                 "): frames to it will not arrive; give each VM its own mac=");
    start_write(p);  // frames queued while it was away
}

void PeerMesh::State::on_frame(Peer& p, std::vector<uint8_t> frame)
{
    if (frame.size() < kEthernetHeaderSize) {
        guest_log.warn("peer " + p.name + " sent a " + std::to_string(frame.size()) +
                       "-byte frame, shorter than an Ethernet header; dropped");
        return;
    }
    const MacAddress source = MacAddress::from_bytes(frame.data() + 6);
    if (source != spec.mac) {  // a peer's guest cannot claim our guest's address
        std::lock_guard lock(mutex);
        mac_table.learn(source, p.index);
    }
    if (!sink->deliver_to_guest(frame)) p.held = std::move(frame);
}

void PeerMesh::State::resume_receive()
{
    const size_t n = peers.size();
    for (size_t k = 0; k < n; ++k) {
        Peer& p = *peers[(resume_cursor + k) % n];
        if (!p.held) continue;
        if (!sink->deliver_to_guest(*p.held)) {
            resume_cursor = p.index;  // still no room; this peer goes first next time
            return;
        }
        p.held.reset();
        if (p.conn && p.conn->stage == Stage::established) drain(p.conn);
        if (p.held) {  // the guest filled up again
            resume_cursor = (p.index + 1) % n;
            return;
        }
    }
}

// ---- sending ----------------------------------------------------------------

bool PeerMesh::State::try_send(std::span<const uint8_t> frame)
{
    if (frame.size() < kEthernetHeaderSize || frame.size() > kMaxFrameSize) {
        // Consumed, not refused: refusing would stall the guest's TX queue on a frame that never fits.
        guest_log.warn("guest sent a " + std::to_string(frame.size()) + "-byte frame (Ethernet frames are " +
                       std::to_string(kEthernetHeaderSize) + ".." + std::to_string(kMaxFrameSize) +
                       " bytes); dropped");
        return true;
    }
    const MacAddress destination = MacAddress::from_bytes(frame.data());
    const size_t bytes = encoded_frame_size(frame.size());

    std::lock_guard lock(mutex);
    if (closed_for_send) return true;
    std::optional<size_t> target;
    if (!destination.is_multicast()) {
        if (destination == spec.mac) return true;  // to itself: a switch does not send a frame back out its port
        target = mac_table.lookup(destination);
    }
    auto for_each_target = [&](auto&& fn) {
        if (target) fn(*peers[*target]);
        else
            for (auto& p : peers) fn(*p);
    };
    // Decide before queuing anything, so a refused frame is not half sent.
    bool full = false;
    for_each_target([&](Peer& p) { full = full || (p.linked && !p.queue.has_room(bytes)); });
    if (full) {
        tx_blocked = true;
        return false;
    }
    for_each_target([&](Peer& p) {
        if (!p.queue.has_room(bytes)) {
            drop_log.warn("peer " + p.address.to_string() + " is not connected and " +
                          std::to_string(p.queue.limit()) + " bytes wait for it already; frame dropped");
            return;
        }
        if (p.staged || (batching && p.linked && !p.writer_active && !p.queue.has_pending() && p.direct_fd >= 0)) {
            p.queue.push_frame(frame);  // written in one go by end_batch()
            p.staged = true;
            return;
        }
        if (p.linked && !p.writer_active && !p.queue.has_pending() && p.direct_fd >= 0) {
            direct_send(p, frame);
            return;
        }
        p.queue.push_frame(frame);
        if (p.linked && !p.writer_active) {
            p.writer_active = true;
            asio::post(io, [this, &p] { start_write(p); });
        }
    });
    return true;
}

// The fast path: nothing queued and no write in flight, so the frame can go
// straight to the socket from the caller's thread (the device's I/O thread)
// without waking the network thread. Whatever the socket does not take now
// is queued, in order, for the network thread. Called with the lock held.
void PeerMesh::State::direct_send(Peer& p, std::span<const uint8_t> frame)
{
    direct_buffer.clear();
    append_frame(direct_buffer, frame);
    ssize_t n = ::send(p.direct_fd, direct_buffer.data(), direct_buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    // An error is the network thread's to report: it will see it on its next write.
    if (n < 0) n = 0;
    if (static_cast<size_t>(n) == direct_buffer.size()) return;
    p.queue.push_bytes(std::span<const uint8_t>(direct_buffer).subspan(static_cast<size_t>(n)));
    p.writer_active = true;
    asio::post(io, [this, &p] { start_write(p); });
}

// Writes what was staged for `p` during a batch with one send(); the network
// thread takes whatever the socket does not accept now. Lock held.
void PeerMesh::State::flush_staged(Peer& p)
{
    p.staged = false;
    if (!p.queue.has_pending()) return;
    if (p.linked && !p.writer_active && p.direct_fd >= 0) {
        p.queue.take_batch(direct_buffer);
        p.queue.batch_done();
        ssize_t n = ::send(p.direct_fd, direct_buffer.data(), direct_buffer.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) n = 0;  // the network thread reports errors on its next write
        if (static_cast<size_t>(n) == direct_buffer.size()) return;
        p.queue.push_bytes(std::span<const uint8_t>(direct_buffer).subspan(static_cast<size_t>(n)));
    }
    if (p.linked && !p.writer_active) {
        p.writer_active = true;
        asio::post(io, [this, &p] { start_write(p); });
    }
}

// Writes everything queued for `p` as one batch; called again when that
// write completes, until the queue is empty.
void PeerMesh::State::start_write(Peer& p)
{
    const auto conn = p.conn;
    if (conn && conn->write_in_flight) return;  // its completion calls us again
    {
        std::lock_guard lock(mutex);
        if (!conn || conn->stage != Stage::established || !p.queue.has_pending()) {
            p.writer_active = false;
            return;
        }
        p.writer_active = true;
        p.queue.take_batch(conn->writing);
    }
    conn->write_in_flight = true;
    asio::async_write(conn->socket, asio::buffer(conn->writing),
                      [this, &p, conn](std::error_code ec, size_t) { on_written(p, conn, ec); });
}

void PeerMesh::State::on_written(Peer& p, const std::shared_ptr<Connection>& conn, std::error_code ec)
{
    conn->write_in_flight = false;
    if (conn->closed || p.conn != conn) return;  // fail() already reset the queue's accounting
    {
        std::lock_guard lock(mutex);
        p.queue.batch_done();
    }
    if (ec) {
        fail(conn, "send failed: " + ec.message(), LogLevel::warn);
        return;
    }
    start_write(p);
    maybe_transmit_ready();
}

void PeerMesh::State::maybe_transmit_ready()
{
    {
        std::lock_guard lock(mutex);
        if (!tx_blocked) return;
        // Half empty, not merely one frame of room: the device then sends a
        // burst instead of one frame per wake-up.
        const bool room = std::all_of(peers.begin(), peers.end(), [](const auto& p) {
            return !p->linked || p->queue.bytes() <= p->queue.limit() / 2;
        });
        if (!room) return;
        tx_blocked = false;
    }
    sink->transmit_ready();
}

void PeerMesh::State::stop()
{
    std::lock_guard lifecycle(lifecycle_mutex);
    if (stopped) return;
    stopped = true;
    {
        std::lock_guard lock(mutex);
        closed_for_send = true;
    }
    if (!started) return;
    io.stop();
    thread.join();
    // Close now, so peers see it at once rather than when the mesh is destroyed.
    std::error_code ignored;
    acceptor.close(ignored);
    for (auto& conn : inbound) conn->socket.close(ignored);
    for (auto& p : peers)
        if (p->conn) p->conn->socket.close(ignored);
}

// ---- PeerMesh ---------------------------------------------------------------

Result<std::unique_ptr<PeerMesh>> PeerMesh::create(const PeerNetSpec& spec, const PeerMeshLimits& limits)
{
    TRY(validate_peer_net_spec(spec));
    if (limits.send_queue_bytes < kMaxMessageSize)
        return Error("peer mesh send queue of " + std::to_string(limits.send_queue_bytes) +
                     " bytes cannot hold one maximum-size frame");
    auto state = std::make_unique<State>(spec, limits);
    TRY(state->open_acceptor());
    return std::unique_ptr<PeerMesh>(new PeerMesh(std::move(state)));
}

PeerMesh::PeerMesh(std::unique_ptr<State> state) : state_(std::move(state)) {}

PeerMesh::~PeerMesh() { stop(); }

void PeerMesh::attach(FrameSink* sink) { state_->sink = sink; }

Result<void> PeerMesh::start()
{
    State& s = *state_;
    std::lock_guard lifecycle(s.lifecycle_mutex);
    if (s.started || s.stopped) return Error("peer mesh was already started");
    if (!s.sink) return Error("peer mesh has no frame sink attached");
    asio::post(s.io, [&s] {
        s.start_accept();
        for (auto& p : s.peers)
            if (p->we_dial) s.dial(*p);
    });
    try {
        s.thread = std::thread([&s] { s.run(); });
    } catch (const std::system_error& e) {
        return Error(std::string("cannot start the network thread: ") + e.what());
    }
    s.started = true;
    log_info("peer mesh: '" + s.spec.id + "' listening on " + s.spec.listen.to_string() + ", guest MAC " +
             s.spec.mac.to_string() + (s.spec.mac_derived ? " (derived from the id)" : "") + ", " +
             std::to_string(s.peers.size()) + " peer(s)");
    return ok();
}

bool PeerMesh::try_send(std::span<const uint8_t> frame) { return state_->try_send(frame); }

void PeerMesh::receive_ready()
{
    State& s = *state_;
    asio::post(s.io, [&s] { s.resume_receive(); });
}

void PeerMesh::begin_batch()
{
    std::lock_guard lock(state_->mutex);
    state_->batching = true;
}

void PeerMesh::end_batch()
{
    State& s = *state_;
    {
        std::lock_guard lock(s.mutex);
        s.batching = false;
        for (auto& p : s.peers)
            if (p->staged) s.flush_staged(*p);
    }
    // A frame refused during the batch waits for room; a flush that went out
    // whole makes room without any write completing, so say so here.
    s.maybe_transmit_ready();
}

void PeerMesh::stop() { state_->stop(); }

size_t PeerMesh::connected_peers() const
{
    std::lock_guard lock(state_->mutex);
    return static_cast<size_t>(
        std::count_if(state_->peers.begin(), state_->peers.end(), [](const auto& p) { return p->linked; }));
}

}  // namespace vvmm::net
