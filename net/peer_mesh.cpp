#include "net/peer_mesh.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "net/channel_cut.hpp"
#include "net/mac_table.hpp"
#include "net/peer_protocol.hpp"
#include "net/send_queue.hpp"
#include "net/tls_psk.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::net {
namespace {

using asio::ip::tcp;
using TlsStream = asio::ssl::stream<tcp::socket>;

constexpr size_t kReadChunk = 16 * 1024;
// Controllers connected at once (each has one request in flight at most).
constexpr size_t kMaxControllers = 16;
// Keepalive probes after 5 s of silence, every 2 s, 3 unanswered: a peer
// whose machine died is noticed in ~11 s even when nothing is being sent.
// Sent data unacknowledged for 10 s (TCP_USER_TIMEOUT) ends the connection too.
constexpr int kKeepaliveIdleS = 5;
constexpr int kKeepaliveIntervalS = 2;
constexpr int kKeepaliveCount = 3;
constexpr unsigned kUserTimeoutMs = 10000;
constexpr std::chrono::milliseconds kAcceptRetry{100};
constexpr std::chrono::milliseconds kListenRetry{50};

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

// Small writes at once, and a dead peer noticed (see kKeepalive*).
void tune_socket(tcp::socket& socket)
{
    std::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    socket.set_option(asio::socket_base::keep_alive(true), ignored);
    const int fd = socket.native_handle();
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &kKeepaliveIdleS, sizeof kKeepaliveIdleS);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &kKeepaliveIntervalS, sizeof kKeepaliveIntervalS);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &kKeepaliveCount, sizeof kKeepaliveCount);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &kUserTimeoutMs, sizeof kUserTimeoutMs);
}

std::string to_string(const tcp::endpoint& e)
{
    std::error_code ec;
    const std::string host = e.address().to_string(ec);
    return (e.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(e.port());
}

struct Peer;

// An accepted connection is tied to its peer (or counted as a controller)
// only once its TLS handshake proved the cluster's secret and its HELLO was
// accepted, so an impostor cannot displace a peer.
enum class Stage { connecting, tls_handshake, awaiting_hello, established };

// One TCP connection, from connect or accept until it is closed. Handlers
// hold a shared_ptr to it, so its socket and buffers outlive every operation
// on them; a handler whose connection is closed, or no longer its peer's
// current one, is stale and does nothing.
struct Connection {
    Connection(asio::io_context& io, tcp::socket s, asio::ssl::context& tls)
        : stream(std::move(s), tls), deadline(io), stall_timer(io)
    {
    }
    tcp::socket& socket() { return stream.next_layer(); }

    TlsStream stream;
    asio::steady_timer deadline;     // connect, then TLS handshake and HELLO; a controller's idleness
    asio::steady_timer stall_timer;  // the write in flight must complete before it fires
    asio::ip::address source;        // accepted: the remote address, for admission
    Stage stage = Stage::connecting;
    Peer* peer = nullptr;  // null while an accepted connection is not identified yet
    bool controller = false;  // accepted: a controller (vvmm checkpoint --all, list)
    Hello hello;              // theirs
    std::string remote;    // for logs about unidentified connections
    MessageDecoder decoder;
    std::array<uint8_t, kReadChunk> read_buffer;
    std::vector<uint8_t> writing;  // the batch being written (or our HELLO)
    std::vector<uint8_t> replies;  // a controller's replies waiting for the write in flight
    bool reading = false;
    bool write_in_flight = false;
    bool request_in_flight = false;  // a controller's request waits for its reply
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
    bool marker_held = false;                  // its MARKER came before our cut: not read until then
    std::string name;                          // "b at 127.0.0.1:7002" once its HELLO came
    std::string id;                            // its VMM id: from the cluster, or its first HELLO

    // Guarded by State::mutex.
    SendQueue queue;
    bool linked = false;         // established: the queue drains
    bool ever_linked = false;    // connected at least once since the mesh started
    bool writer_active = false;  // a write is in flight or about to be started
    bool staged = false;         // frames queued during a batch: end_batch() wakes the writer
};

}  // namespace

struct PeerMesh::State {
    State(const PeerNetSpec& s, const PeerMeshLimits& l, MeshCluster c);

    Result<void> open_acceptor();
    template <typename Fn>
    void guard_handler(const Connection& conn, const Message& message, Fn fn);
    void run();
    // Ours, naming whom we meant to reach (peer_protocol.hpp, HELLO).
    Hello own_hello(const SocketAddress& target, const std::string& target_id) const
    {
        return Hello{.role = PeerRole::peer, .mac = spec.mac, .listen = spec.listen, .id = spec.id,
                     .cluster = cluster.name, .target = target, .target_id = target_id};
    }
    // Runs `fn` on the network thread and waits for it (inline if this is
    // the network thread, or if it is not running).
    template <typename Fn>
    auto on_network_thread(Fn fn) -> decltype(fn());

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
    void start_tls(const std::shared_ptr<Connection>& conn, asio::ssl::stream_base::handshake_type side);
    void on_hello(std::shared_ptr<Connection> conn, const Hello& hello);
    Result<Peer*> check_hello(const Connection& conn, const Hello& hello) const;
    void send_hello(const std::shared_ptr<Connection>& conn, const Hello& hello);
    void adopt(const std::shared_ptr<Connection>& conn, Peer* p);
    void establish(const std::shared_ptr<Connection>& conn, const Hello& hello);
    void on_message(const std::shared_ptr<Connection>& conn, Message& message);
    void on_request(const std::shared_ptr<Connection>& conn, const nlohmann::json& request);
    void write_replies(const std::shared_ptr<Connection>& conn);
    void arm_idle(const std::shared_ptr<Connection>& conn);
    bool admit(const asio::ip::address& source, const std::string& remote);
    template <typename Done>
    void write(const std::shared_ptr<Connection>& conn, Done done);
    void on_frame(Peer& p, std::vector<uint8_t> frame);
    void on_marker(Peer& p, uint64_t epoch);
    void watch_unadopted_epoch(uint64_t epoch, const std::string& from);
    void resume_receive();
    bool deliver_backlog();
    bool blocked(const Peer& p) const { return p.held || p.marker_held || !backlog.empty(); }

    // The cut (network thread).
    void do_cut(uint64_t epoch);
    void release(const std::vector<size_t>& peers);
    void check_cut_complete();
    void fail_epoch(const std::string& why);
    void queue_bytes(Peer& p, const std::vector<uint8_t>& bytes);

    // Sending.
    bool try_send(std::span<const uint8_t> frame);  // any thread
    void wake_writer(Peer& p);                      // lock held
    void flush_staged(Peer& p);
    void start_write(Peer& p);
    void on_written(Peer& p, const std::shared_ptr<Connection>& conn, std::error_code ec);
    void maybe_transmit_ready();

    void stop();

    // TLS for every connection (tls_psk.hpp); outlives the io_context, whose
    // destruction destroys the handlers holding the streams.
    const MeshCluster cluster;
    const ClusterPsk psk;
    asio::ssl::context tls{asio::ssl::context::tls};
    // Destroyed before the TLS context, after everything else: sockets and
    // timers must go before their io_context.
    asio::io_context io;
    tcp::acceptor acceptor{io};
    asio::steady_timer accept_retry{io};
    // An epoch a peer's MARKER began here, until begin_epoch() adopts it.
    asio::steady_timer unadopted_epoch_timer{io};
    asio::steady_timer boot_timer{io};
    uint64_t adopted_epoch = 0;
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
    bool booting = true;      // within limits.boot_grace of start()
    // Whether a full queue for `p` refuses the guest's frame (pushes back)
    // rather than dropping it: while connected, and while the cluster boots
    // for a peer that has not connected yet, so a booting cluster loses nothing.
    bool pushes_back(const Peer& p) const { return p.linked || (booting && !p.ever_linked); }
    bool batching = false;    // between begin_batch() and end_batch()
    bool closed_for_send = false;

    RateLimitedLog guest_log;
    RateLimitedLog drop_log;
    RateLimitedLog accept_log;

    // Cluster (network thread, except where noted).
    ClusterHandler* handler = nullptr;
    std::vector<std::shared_ptr<Connection>> controllers;
    // A restored VM's channel state, delivered first: (peer index, frame).
    std::deque<std::pair<size_t, std::vector<uint8_t>>> backlog;
    ChannelCut cut;
    bool delivery_held = false;
    // What wait_channel_state() waits for; guarded by epoch_mutex.
    std::mutex epoch_mutex;
    std::condition_variable epoch_cv;
    std::map<uint64_t, Result<ChannelState>> epoch_results;
};

PeerMesh::State::State(const PeerNetSpec& s, const PeerMeshLimits& l, MeshCluster c)
    : cluster(std::move(c)), psk(derive_cluster_psk(cluster.secret, cluster.name)), spec(s), limits(l),
      cut(s.peers.size())
{
    for (size_t i = 0; i < spec.peers.size(); ++i) {
        // The lower listen address dials: both sides compute the same answer.
        const bool we_dial = spec.listen < spec.peers[i];
        peers.push_back(std::make_unique<Peer>(io, i, spec.peers[i], we_dial, limits.send_queue_bytes));
        peers.back()->backoff = limits.backoff_initial;
        if (i < cluster.peer_ids.size()) peers.back()->id = cluster.peer_ids[i];
    }
}

template <typename Fn>
auto PeerMesh::State::on_network_thread(Fn fn) -> decltype(fn())
{
    // On the network thread: run it here, without lifecycle_mutex, which
    // stop() holds while it joins this very thread.
    if (io.get_executor().running_in_this_thread()) return fn();
    {
        std::lock_guard lifecycle(lifecycle_mutex);
        if (!started || stopped) return fn();
    }
    std::packaged_task<decltype(fn())()> task(std::move(fn));
    auto result = task.get_future();
    asio::post(io, [&task] { task(); });
    // stop() may come first: the task then never runs, and nothing else will.
    while (result.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
        std::lock_guard lifecycle(lifecycle_mutex);
        if (stopped) return decltype(fn())();
    }
    return result.get();
}

Result<void> PeerMesh::State::open_acceptor()
{
    const tcp::endpoint endpoint = to_endpoint(spec.listen);
    const std::string what = "cannot listen on " + spec.listen.to_string();
    const auto give_up = std::chrono::steady_clock::now() + limits.listen_busy_wait;
    for (;;) {
        std::error_code ec;
        acceptor.open(endpoint.protocol(), ec);
        if (ec) return Error(what + ": " + ec.message());
        // A restarted VMM must be able to listen again while its old
        // connections linger in TIME_WAIT.
        acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
        if (!ec) acceptor.bind(endpoint, ec);
        if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
        if (!ec) return ok();
        std::error_code ignored;
        acceptor.close(ignored);
        if (ec != asio::error::address_in_use || std::chrono::steady_clock::now() >= give_up)
            return Error(what + ": " + ec.message());
        std::this_thread::sleep_for(kListenRetry);
    }
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
    const tcp::endpoint endpoint = socket.remote_endpoint(ec);
    if (ec) return;  // gone already
    const std::string remote = to_string(endpoint);
    if (!admit(endpoint.address(), remote)) return;  // closing `socket`
    tune_socket(socket);
    auto conn = std::make_shared<Connection>(io, std::move(socket), tls);
    conn->remote = remote;
    conn->source = endpoint.address();
    inbound.push_back(conn);
    arm_deadline(conn, limits.handshake_timeout, "no TLS handshake and HELLO");
    start_tls(conn, asio::ssl::stream_base::server);
}

// Whether a new connection from `source` may start a handshake (see
// PeerMeshLimits::max_handshakes): bounded overall and per address, and a
// configured peer's address can always get in by evicting the oldest
// handshake from an address that is not a peer's.
bool PeerMesh::State::admit(const asio::ip::address& source, const std::string& remote)
{
    const auto is_peer_address = [&](const asio::ip::address& a) {
        return std::any_of(peers.begin(), peers.end(), [&](const auto& p) { return p->endpoint.address() == a; });
    };
    const auto from_source =
        std::count_if(inbound.begin(), inbound.end(), [&](const auto& c) { return c->source == source; });
    if (static_cast<size_t>(from_source) >= limits.per_source_handshakes) {
        accept_log.warn("refusing a connection from " + remote + ": " + std::to_string(from_source) +
                        " handshakes from that address are open already");
        return false;
    }
    if (inbound.size() < limits.max_handshakes) return true;
    if (is_peer_address(source)) {
        const auto victim = std::find_if(inbound.begin(), inbound.end(),
                                         [&](const auto& c) { return !is_peer_address(c->source); });
        if (victim != inbound.end()) {
            fail(*victim, "dropped to make room for a handshake from a configured peer's address", LogLevel::warn);
            return true;
        }
    }
    accept_log.warn("refusing a connection from " + remote + ": " + std::to_string(inbound.size()) +
                    " handshakes are open already");
    return false;
}

void PeerMesh::State::dial(Peer& p)
{
    auto conn = std::make_shared<Connection>(io, tcp::socket(io), tls);
    conn->peer = &p;
    p.conn = conn;
    arm_deadline(conn, limits.connect_timeout, "no connection");
    conn->socket().async_connect(p.endpoint, [this, conn](std::error_code ec) {
        if (conn->closed) return;
        if (ec) {
            Peer& peer = *conn->peer;
            // A peer that is not up yet is normal while a cluster boots: say it once.
            const LogLevel level = peer.reported_unreachable ? LogLevel::debug : LogLevel::info;
            peer.reported_unreachable = true;
            fail(conn, "cannot connect (" + ec.message() + "); retrying", level);
            return;
        }
        tune_socket(conn->socket());
        arm_deadline(conn, limits.handshake_timeout, "no TLS handshake and HELLO");
        start_tls(conn, asio::ssl::stream_base::client);
    });
}

// The TLS handshake, then HELLO: the dialer sends its own at once, the
// acceptor waits for the dialer's. Only HELLO is decoded until one is accepted.
void PeerMesh::State::start_tls(const std::shared_ptr<Connection>& conn, asio::ssl::stream_base::handshake_type side)
{
    conn->stage = Stage::tls_handshake;
    conn->stream.async_handshake(side, [this, conn](std::error_code ec) {
        if (conn->closed) return;
        if (ec) {
            fail(conn, "TLS handshake failed (" + ec.message() + "): it does not hold cluster '" + cluster.name +
                           "''s secret, or belongs to another cluster",
                 conn->peer && conn->peer->reported_unreachable ? LogLevel::debug : LogLevel::warn);
            return;
        }
        conn->stage = Stage::awaiting_hello;
        conn->decoder.accept_only_hello(true);
        if (conn->peer) send_hello(conn, own_hello(conn->peer->address, conn->peer->id));
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
        if (ec || conn->closed || conn->stage == Stage::established) return;  // (controllers too)
        fail(conn, what + " within " + std::to_string(timeout.count()) + " ms", LogLevel::warn);
    });
}

std::string PeerMesh::State::describe(const Connection& conn)
{
    if (conn.peer) return "peer " + conn.peer->name;
    if (conn.controller) return "controller '" + conn.hello.id + "' from " + conn.remote;
    return "connection from " + conn.remote;
}

// Closes `conn` and, if it was its peer's current connection, puts the peer
// back to "not connected": its queue keeps filling (bounded) until the next
// connection, and the dialing side redials.
void PeerMesh::State::fail(std::shared_ptr<Connection> conn, const std::string& reason, LogLevel level)
{
    if (conn->closed) return;
    conn->closed = true;
    std::error_code ignored;
    conn->socket().close(ignored);
    conn->deadline.cancel();
    conn->stall_timer.cancel();
    Peer* p = conn->peer;
    if (!p) {
        std::erase(inbound, conn);
        std::erase(controllers, conn);
        log_line(conn->controller && conn->stage == Stage::established ? LogLevel::debug : level,
                 describe(*conn) + ": " + reason);
        return;
    }
    if (p->conn != conn) return;
    const bool was_established = conn->stage == Stage::established;
    if (was_established) {
        // Frames it had sent may be lost with the connection: no cut through it holds.
        if (cut.epoch() && !cut.complete())
            fail_epoch("lost the connection to " + p->id + " during epoch " + std::to_string(*cut.epoch()));
        if (handler) handler->on_peer_lost(p->id);
    }
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
    conn->stream.async_read_some(asio::buffer(conn->read_buffer), [this, conn](std::error_code ec, size_t n) {
        conn->reading = false;
        if (conn->closed) return;
        if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
            const bool handshake = conn->stage != Stage::established;
            fail(conn,
                 handshake ? "closed during the handshake (does it speak protocol version " +
                                 std::to_string(kProtocolVersion) + "? see its log)"
                           : "closed by the peer",
                 conn->peer ? LogLevel::warn : LogLevel::debug);
            return;
        }
        if (ec) {  // a TLS record that fails its check lands here: the stream was tampered with
            fail(conn, "receive failed: " + ec.message(), LogLevel::warn);
            return;
        }
        conn->decoder.feed(std::span<const uint8_t>(conn->read_buffer.data(), n));
        drain(conn);
    });
}

// Handles every complete message the decoder holds, then reads more, unless
// the peer's frames cannot go on (the sink refused one, its MARKER came
// before our cut, or a restored backlog is still being delivered): then the
// connection stays unread (TCP pushes back on the sender) until that ends.
void PeerMesh::State::drain(std::shared_ptr<Connection> conn)
{
    for (;;) {
        if (conn->closed) return;
        if (conn->stage == Stage::established && conn->peer && blocked(*conn->peer)) return;
        auto next = conn->decoder.next();
        if (!next.ok()) {
            fail(conn, "protocol error: " + next.error().message() + "; closing the connection", LogLevel::error);
            return;
        }
        if (!next.value()) break;
        on_message(conn, *next.value());
    }
    start_read(conn);
}

// The cluster code reads JSON bodies from peers; a field of the wrong type
// throws. That must cost the message, not the network thread (which would
// stop every frame of this VM and hang whoever waits on it).
template <typename Fn>
void PeerMesh::State::guard_handler(const Connection& conn, const Message& message, Fn fn)
{
    try {
        fn();
    } catch (const std::exception& e) {
        log_error(describe(conn) + ": its " + std::string(message_name(message)) + " could not be handled (" +
                  e.what() + "); ignored");
    }
}

void PeerMesh::State::on_message(const std::shared_ptr<Connection>& conn, Message& message)
{
    if (const Hello* hello = std::get_if<Hello>(&message)) {
        on_hello(conn, *hello);
    } else if (conn->stage != Stage::established) {  // the decoder lets none through; kept as a guard
        fail(conn, "protocol error: a " + std::string(message_name(message)) + " came before HELLO", LogLevel::error);
    } else if (conn->controller) {
        if (const ControlRequest* request = std::get_if<ControlRequest>(&message))
            guard_handler(*conn, message, [&] { on_request(conn, request->body); });
        else fail(conn, "protocol error: a controller sent " + std::string(message_name(message)), LogLevel::error);
    } else if (FrameMessage* frame = std::get_if<FrameMessage>(&message)) {
        on_frame(*conn->peer, std::move(frame->frame));
    } else if (const MarkerMessage* marker = std::get_if<MarkerMessage>(&message)) {
        on_marker(*conn->peer, marker->epoch);
    } else if (const ControlMessage* control = std::get_if<ControlMessage>(&message)) {
        if (handler) guard_handler(*conn, message, [&] {
            handler->on_control(conn->peer->id, control->type, control->epoch, control->body);
        });
        else log_warn("peer " + conn->peer->name + " sent " + std::string(message_name(message)) +
                      ", but this VMM is not part of a cluster; ignored");
    } else {
        fail(conn, "protocol error: a peer sent " + std::string(message_name(message)), LogLevel::error);
    }
}

// Our HELLO, written before anything else on the connection; once it is
// out, whatever queued up behind it goes.
void PeerMesh::State::send_hello(const std::shared_ptr<Connection>& conn, const Hello& hello)
{
    conn->writing.clear();
    append_hello(conn->writing, hello);
    write(conn, [this, conn](std::error_code ec) {
        if (conn->closed) return;
        if (ec) {
            fail(conn, "sending HELLO: " + ec.message(), LogLevel::warn);
            return;
        }
        if (conn->stage != Stage::established) return;
        if (conn->controller) write_replies(conn);
        else if (conn->peer && conn->peer->conn == conn) start_write(*conn->peer);
    });
}

void PeerMesh::State::on_hello(std::shared_ptr<Connection> conn, const Hello& hello)
{
    if (conn->stage != Stage::awaiting_hello) {
        fail(conn, "protocol error: a second HELLO", LogLevel::error);
        return;
    }
    auto checked = check_hello(*conn, hello);
    if (!checked) {
        fail(conn, "refused: " + checked.error().message(), LogLevel::error);
        return;
    }
    conn->hello = hello;
    conn->decoder.accept_only_hello(false);
    if (conn->peer) {  // we dialed, and the one we meant answered
        establish(conn, hello);
        return;
    }
    conn->controller = hello.role == PeerRole::controller;
    send_hello(conn, own_hello(conn->controller ? SocketAddress() : hello.listen, hello.id));
    adopt(conn, checked.value());
}

// Whether `hello` comes from whom this connection may carry: someone of
// this cluster (TLS proved the secret) who meant to reach this VMM, and,
// when we dialed, the peer we meant. For an accepted peer: which one it is.
Result<Peer*> PeerMesh::State::check_hello(const Connection& conn, const Hello& hello) const
{
    if (hello.cluster != cluster.name)
        return Error("'" + hello.id + "' belongs to cluster '" + hello.cluster + "', this VMM to '" + cluster.name + "'");
    const bool target_is_us = (hello.target == SocketAddress() || hello.target == spec.listen) &&
                              (hello.target_id.empty() || hello.target_id == spec.id);
    const std::string target = hello.target_id.empty() ? hello.target.to_string() : "'" + hello.target_id + "'";
    if (!target_is_us) return Error("'" + hello.id + "' meant to reach " + target + ", not this VMM (relayed?)");
    if (hello.role == PeerRole::controller) {
        if (conn.peer) return Error("the VMM at " + conn.peer->address.to_string() + " answers as a controller");
        if (hello.target_id.empty()) return Error("controller '" + hello.id + "' did not say which VMM it meant");
        return nullptr;
    }
    const std::string who = "'" + hello.id + "' listening on " + hello.listen.to_string();
    if (hello.id == spec.id) return Error(who + " has this VMM's own id");
    Peer* p = conn.peer;
    if (p) {  // we dialed: it must be the one we meant, answering us
        if (hello.listen != p->address) return Error("the VMM at " + p->address.to_string() + " says it is " + who);
        if (hello.target != spec.listen || hello.target_id != spec.id)
            return Error(who + " answered someone else (" + target + ")");
    } else {
        if (hello.target == SocketAddress()) return Error(who + " did not say which VMM it meant");
        const auto it =
            std::find_if(peers.begin(), peers.end(), [&](const auto& q) { return q->address == hello.listen; });
        if (it == peers.end()) return Error(who + " is not one of this VMM's peers");
        p = it->get();
        if (p->we_dial) return Error(who + " dialed this VMM, but this VMM dials it (the lower listen address dials)");
    }
    if (!p->id.empty() && !cluster.peer_ids.empty() && hello.id != p->id)
        return Error(who + " should be '" + p->id + "' by the cluster configuration");
    return p;
}

// An accepted connection whose HELLO was accepted: a controller, or its
// peer's connection from now on (replacing an older one: the peer restarted).
void PeerMesh::State::adopt(const std::shared_ptr<Connection>& conn, Peer* p)
{
    std::erase(inbound, conn);
    if (conn->controller) {
        if (controllers.size() >= kMaxControllers) {
            fail(conn, "refused: too many controllers connected", LogLevel::warn);
            return;
        }
        conn->stage = Stage::established;
        conn->deadline.cancel();
        controllers.push_back(conn);
        arm_idle(conn);
        log_debug("controller '" + conn->hello.id + "' from " + conn->remote + " connected");
        return;
    }
    if (p->conn) fail(p->conn, "replaced by a new connection from the same peer", LogLevel::info);
    conn->peer = p;
    p->conn = conn;
    establish(conn, conn->hello);
}

void PeerMesh::State::establish(const std::shared_ptr<Connection>& conn, const Hello& hello)
{
    Peer& p = *conn->peer;
    conn->stage = Stage::established;
    conn->deadline.cancel();
    p.id = hello.id;
    p.name = "'" + hello.id + "' at " + p.address.to_string();
    p.backoff = limits.backoff_initial;
    p.reported_unreachable = false;
    {
        std::lock_guard lock(mutex);
        p.linked = true;
        p.ever_linked = true;
        mac_table.pin(hello.mac, p.index);
    }
    log_info("connected to peer " + p.name + " (guest MAC " + hello.mac.to_string() + ")");
    if (hello.mac == spec.mac)
        log_warn("peer " + p.name + " has the same guest MAC as this VM (" + hello.mac.to_string() +
                 "): frames to it will not arrive; give each VM its own mac=");
    start_write(p);  // frames queued while it was away
}

void PeerMesh::State::on_request(const std::shared_ptr<Connection>& conn, const nlohmann::json& request)
{
    // One at a time: a controller that pipelines requests could make replies
    // (and the work behind them) pile up without bound.
    if (conn->request_in_flight) {
        fail(conn, "protocol error: a second request before the reply to the first", LogLevel::warn);
        return;
    }
    conn->request_in_flight = true;
    conn->deadline.cancel();  // not idle while we work for it
    if (!handler) {
        append_ctl_reply(conn->replies, {{"ok", false}, {"error", "this VMM is not part of a cluster"}});
        write_replies(conn);
        return;
    }
    // The reply may come from another thread, much later (a checkpoint):
    // it is written on the network thread, if the controller is still there.
    std::weak_ptr<Connection> weak = conn;
    handler->on_request(request, [this, weak](nlohmann::json reply) {
        asio::post(io, [this, weak, reply = std::move(reply)] {
            auto c = weak.lock();
            if (!c || c->closed) return;
            append_ctl_reply(c->replies, reply);
            write_replies(c);
        });
    });
}

// The controller's reply, once it is ready (at most one is pending).
void PeerMesh::State::write_replies(const std::shared_ptr<Connection>& conn)
{
    if (conn->write_in_flight || conn->replies.empty() || conn->closed) return;
    conn->writing = std::move(conn->replies);
    conn->replies.clear();
    write(conn, [this, conn](std::error_code ec) {
        if (ec) {
            fail(conn, "sending a reply: " + ec.message(), LogLevel::debug);
            return;
        }
        conn->request_in_flight = false;
        arm_idle(conn);
        write_replies(conn);
    });
}

void PeerMesh::State::arm_idle(const std::shared_ptr<Connection>& conn)
{
    conn->deadline.expires_after(limits.controller_idle_timeout);
    conn->deadline.async_wait([this, conn](std::error_code ec) {
        if (ec || conn->closed || conn->request_in_flight) return;
        fail(conn, "idle for " + std::to_string(limits.controller_idle_timeout.count()) + " ms; closed", LogLevel::debug);
    });
}

// Writes conn->writing; a write that makes no progress within
// write_stall_timeout drops the connection (its peer is stopped or gone).
template <typename Done>
void PeerMesh::State::write(const std::shared_ptr<Connection>& conn, Done done)
{
    conn->write_in_flight = true;
    conn->stall_timer.expires_after(limits.write_stall_timeout);
    conn->stall_timer.async_wait([this, conn](std::error_code ec) {
        if (ec || conn->closed || !conn->write_in_flight) return;
        fail(conn,
             "sending stalled for " + std::to_string(limits.write_stall_timeout.count()) +
                 " ms (is it stopped?); dropped so the other peers carry on",
             LogLevel::warn);
    });
    asio::async_write(conn->stream, asio::buffer(conn->writing),
                      [conn, done = std::move(done)](std::error_code ec, size_t) mutable {
                          conn->write_in_flight = false;
                          conn->stall_timer.cancel();
                          done(ec);
                      });
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
    // In flight across a cut: recorded, and still delivered (the guest runs).
    cut.on_frame(p.index, frame);
    if (cut.take_overflow())
        fail_epoch("more frames in flight across the cut of epoch " + std::to_string(*cut.epoch()) +
                   " than a checkpoint keeps (is a peer not sending its marker?)");
    if (delivery_held || !sink->deliver_to_guest(frame)) p.held = std::move(frame);
}

void PeerMesh::State::on_marker(Peer& p, uint64_t epoch)
{
    const bool was_running = cut.epoch().has_value();
    const auto action = cut.on_marker(p.index, epoch);
    if (!was_running && cut.epoch() == epoch && adopted_epoch != epoch) watch_unadopted_epoch(epoch, p.name);
    switch (action) {
    case ChannelCut::MarkerAction::hold:
        // It checkpointed before us: what follows on this connection is after its cut.
        p.marker_held = true;
        break;
    case ChannelCut::MarkerAction::proceed: check_cut_complete(); break;
    case ChannelCut::MarkerAction::ignore:
        log_debug("peer " + p.name + ": MARKER of epoch " + std::to_string(epoch) + " ignored (not the running epoch)");
        break;
    }
}

void PeerMesh::State::watch_unadopted_epoch(uint64_t epoch, const std::string& from)
{
    unadopted_epoch_timer.expires_after(limits.unadopted_epoch_timeout);
    unadopted_epoch_timer.async_wait([this, epoch, from](std::error_code ec) {
        if (ec || cut.epoch() != epoch || adopted_epoch == epoch) return;
        log_warn("epoch " + std::to_string(epoch) + " was begun by a MARKER from " + from + ", but no PREPARE came in " +
                 std::to_string(limits.unadopted_epoch_timeout.count()) + " ms: abandoned here");
        release(cut.abort(epoch));
    });
}

// A restored VM's frames that were in flight at the cut go first; until they
// are all in, no connection is read.
bool PeerMesh::State::deliver_backlog()
{
    if (backlog.empty()) return true;
    while (!backlog.empty()) {
        if (delivery_held || !sink->deliver_to_guest(backlog.front().second)) return false;
        backlog.pop_front();
    }
    for (auto& p : peers)
        if (p->conn && p->conn->stage == Stage::established) drain(p->conn);
    return true;
}

void PeerMesh::State::resume_receive()
{
    if (delivery_held || !deliver_backlog()) return;
    const size_t n = peers.size();
    for (size_t k = 0; k < n; ++k) {
        Peer& p = *peers[(resume_cursor + k) % n];
        if (!p.held) {
            if (p.conn && p.conn->stage == Stage::established && !blocked(p)) drain(p.conn);
            continue;
        }
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

// ---- the cut of an epoch ---------------------------------------------------------

// The VM is paused and its state captured: from now on, frames from a peer
// whose MARKER has not come are in flight across the cut.
void PeerMesh::State::do_cut(uint64_t epoch)
{
    if (cut.epoch() != epoch) {
        log_warn("epoch " + std::to_string(epoch) + " ended before this VM's cut; no markers sent");
        delivery_held = false;
        resume_receive();
        return;
    }
    const auto released = cut.captured();
    // A frame the guest had no room for arrived before the cut but is not in the
    // VM's state: it is in flight too. So is what is left of a restored
    // backlog (no connection is read, so no marker has come, while it lasts).
    for (const auto& [peer, frame] : backlog) cut.on_frame(peer, frame);
    for (auto& p : peers)
        if (p->held) cut.on_frame(p->index, *p->held);
    if (cut.take_overflow()) fail_epoch("more frames in flight across the cut than a checkpoint keeps");
    std::vector<uint8_t> marker;
    append_marker(marker, epoch);
    for (auto& p : peers) queue_bytes(*p, marker);
    delivery_held = false;
    release(released);
    check_cut_complete();
}

// Queued behind everything already queued for `p`, whatever the queue's limit.
void PeerMesh::State::queue_bytes(Peer& p, const std::vector<uint8_t>& bytes)
{
    bool queued;
    {
        std::lock_guard lock(mutex);
        queued = p.queue.push_bytes(bytes);
        wake_writer(p);
    }
    if (queued) return;
    // Only a peer that has been away or stalled long enough to back up this
    // much gets here; what it misses ends any epoch that needed it.
    const std::string who = p.address.to_string();  // (p.name is the network thread's)
    drop_log.warn("peer " + who + ": its queue is full; a control message for it was dropped");
    asio::post(io, [this, who] {
        if (cut.epoch()) fail_epoch("a control message for " + who + " was dropped (its queue is full)");
    });
}

void PeerMesh::State::release(const std::vector<size_t>& released)
{
    for (size_t i : released) peers[i]->marker_held = false;
    resume_receive();
}

void PeerMesh::State::check_cut_complete()
{
    if (!cut.complete()) return;
    const uint64_t epoch = *cut.epoch();
    auto recorded = cut.finish();
    ChannelState state;
    state.epoch = epoch;
    for (auto& p : peers) state.peers.push_back({p->id.empty() ? p->address.to_string() : p->id, std::move(recorded[p->index])});
    std::lock_guard lock(epoch_mutex);
    // A failure recorded earlier in the epoch (a lost connection, a peer
    // not connected at the start) stands: frames may be missing from this cut.
    epoch_results.try_emplace(epoch, std::move(state));
    epoch_cv.notify_all();
}

void PeerMesh::State::fail_epoch(const std::string& why)
{
    if (!cut.epoch()) return;
    std::lock_guard lock(epoch_mutex);
    epoch_results.insert_or_assign(*cut.epoch(), Error(why));
    epoch_cv.notify_all();
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
    for_each_target([&](Peer& p) { full = full || (pushes_back(p) && !p.queue.has_room(bytes)); });
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
        p.queue.push_frame(frame);
        if (batching) p.staged = true;  // end_batch() wakes the writer once for the whole batch
        else wake_writer(p);
    });
    return true;
}

// Every write goes through the network thread: a TLS stream is not to be
// written from two threads. Lock held.
void PeerMesh::State::wake_writer(Peer& p)
{
    if (p.linked && !p.writer_active) {
        p.writer_active = true;
        asio::post(io, [this, &p] { start_write(p); });
    }
}

void PeerMesh::State::flush_staged(Peer& p)
{
    p.staged = false;
    if (!closed_for_send && p.queue.has_pending()) wake_writer(p);
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
    write(conn, [this, &p, conn](std::error_code ec) { on_written(p, conn, ec); });
}

void PeerMesh::State::on_written(Peer& p, const std::shared_ptr<Connection>& conn, std::error_code ec)
{
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
        const bool room = std::all_of(peers.begin(), peers.end(), [this](const auto& p) {
            return !pushes_back(*p) || p->queue.bytes() <= p->queue.limit() / 2;
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
    for (auto& conn : inbound) conn->socket().close(ignored);
    for (auto& conn : controllers) conn->socket().close(ignored);
    for (auto& p : peers)
        if (p->conn) p->conn->socket().close(ignored);
}

// ---- PeerMesh ---------------------------------------------------------------

Result<std::unique_ptr<PeerMesh>> PeerMesh::create(const PeerNetSpec& spec, const PeerMeshLimits& limits,
                                                   MeshCluster cluster)
{
    TRY(validate_cluster_name(cluster.name));
    if (!cluster.peer_ids.empty() && cluster.peer_ids.size() != spec.peers.size())
        return Error("peer mesh: " + std::to_string(cluster.peer_ids.size()) + " peer ids for " +
                     std::to_string(spec.peers.size()) + " peers");
    TRY(validate_peer_net_spec(spec));
    if (limits.send_queue_bytes < kMaxMessageSize)
        return Error("peer mesh send queue of " + std::to_string(limits.send_queue_bytes) +
                     " bytes cannot hold one maximum-size frame");
    auto state = std::make_unique<State>(spec, limits, std::move(cluster));
    TRY(configure_psk_tls(state->tls.native_handle(), &state->psk));
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
        s.deliver_backlog();
        s.boot_timer.expires_after(s.limits.boot_grace);
        s.boot_timer.async_wait([&s](std::error_code ec) {
            if (ec) return;
            {
                std::lock_guard lock(s.mutex);
                s.booting = false;
            }
            s.maybe_transmit_ready();  // frames for peers still away are dropped from now on
        });
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
             std::to_string(s.peers.size()) + " peer(s), TLS 1.3");
    if (s.cluster.secret.empty())
        log_warn("peer mesh: no cluster secret: the channel is encrypted but anyone who can reach " +
                 s.spec.listen.to_string() + " can join; use a cluster file with a secret");
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

std::vector<std::string> PeerMesh::connected_peer_ids() const
{
    std::lock_guard lock(state_->mutex);
    std::vector<std::string> ids;
    for (const auto& p : state_->peers)
        if (p->linked) ids.push_back(p->id);
    return ids;
}

void PeerMesh::set_cluster_handler(ClusterHandler* handler) { state_->handler = handler; }

void PeerMesh::set_restore_backlog(const ChannelState& state)
{
    for (const auto& p : state.peers) {
        // Frames of a peer that is not in this cluster any more are kept
        // with the first peer's: what matters is that they come first.
        size_t index = 0;
        for (const auto& mine : state_->peers)
            if (mine->id == p.id) index = mine->index;
        for (const auto& f : p.frames) state_->backlog.emplace_back(index, f);
    }
}

void PeerMesh::send_control(const std::string& peer, MessageType type, uint64_t epoch, const nlohmann::json& body)
{
    std::vector<uint8_t> bytes;
    append_control(bytes, type, epoch, body);
    State& s = *state_;
    bool sent = false;
    for (auto& p : s.peers) {
        // Ids of peers that never connected are only known in a cluster, from its configuration.
        if (!peer.empty() && p->id != peer) continue;
        s.queue_bytes(*p, bytes);
        sent = true;
    }
    if (!sent) log_warn(std::string(message_type_name(type)) + " for unknown peer '" + peer + "' dropped");
}

Result<void> PeerMesh::begin_epoch(uint64_t epoch)
{
    State& s = *state_;
    return s.on_network_thread([&s, epoch]() -> Result<void> {
        {
            std::lock_guard lock(s.epoch_mutex);
            // Results nobody collected (a failed checkpoint never asks) go
            // with their epochs: they may hold every frame recorded.
            s.epoch_results.erase(s.epoch_results.begin(), s.epoch_results.upper_bound(epoch));
        }
        TRY(s.cut.begin(epoch));
        s.adopted_epoch = epoch;
        // A peer that is not connected cannot send its marker: fail now, not at the deadline.
        for (auto& p : s.peers)
            if (!p->conn || p->conn->stage != Stage::established) {
                s.fail_epoch("peer " + (p->id.empty() ? p->address.to_string() : p->id) + " is not connected");
                break;
            }
        return ok();
    });
}

void PeerMesh::hold_delivery()
{
    State& s = *state_;
    s.on_network_thread([&s] { s.delivery_held = true; });
}

void PeerMesh::cut(uint64_t epoch)
{
    State& s = *state_;
    s.on_network_thread([&s, epoch] { s.do_cut(epoch); });
}

void PeerMesh::release_delivery()
{
    State& s = *state_;
    s.on_network_thread([&s] {
        s.delivery_held = false;
        s.resume_receive();
    });
}

void PeerMesh::abort_epoch(uint64_t epoch)
{
    State& s = *state_;
    s.on_network_thread([&s, epoch] {
        if (s.cut.epoch() == epoch) s.fail_epoch("epoch " + std::to_string(epoch) + " was aborted");
        s.release(s.cut.abort(epoch));
    });
}

Result<ChannelState> PeerMesh::wait_channel_state(uint64_t epoch, std::chrono::steady_clock::time_point deadline)
{
    State& s = *state_;
    {
        std::unique_lock lock(s.epoch_mutex);
        s.epoch_cv.wait_until(lock, deadline, [&] { return s.epoch_results.count(epoch) > 0; });
        if (auto it = s.epoch_results.find(epoch); it != s.epoch_results.end()) {
            auto r = std::move(it->second);
            s.epoch_results.erase(it);
            lock.unlock();
            if (!r) abort_epoch(epoch);  // nothing may stay held for an epoch that failed here
            return r;
        }
    }
    // Nothing may stay held for an epoch this VMM gave up on.
    const size_t missing = s.on_network_thread([&s] { return s.cut.missing_markers(); });
    abort_epoch(epoch);
    return Error("timed out waiting for the markers of epoch " + std::to_string(epoch) + " from " +
                 std::to_string(missing) + " peer(s)");
}

size_t PeerMesh::connected_peers() const
{
    std::lock_guard lock(state_->mutex);
    return static_cast<size_t>(
        std::count_if(state_->peers.begin(), state_->peers.end(), [](const auto& p) { return p->linked; }));
}

}  // namespace vvmm::net
