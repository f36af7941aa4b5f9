// The inside of PeerMesh (peer_mesh.hpp), shared by the files that
// implement it and by nothing else: the connection and peer records and the
// State every part works on. The parts, one file each:
//   peer_mesh.cpp          the public API, start and stop, the network thread
//   peer_mesh_links.cpp    links: accept, dial, redial, TLS, HELLO, admission
//   peer_mesh_traffic.cpp  switching and flow control: frames in and out,
//                          send queues, back-pressure towards the guest
//   peer_mesh_epoch.cpp    the epoch glue: markers, the cut, channel state,
//                          and the controllers' requests
#pragma once

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

inline tcp::endpoint to_endpoint(const SocketAddress& a)
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
inline void tune_socket(tcp::socket& socket)
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

inline std::string to_string(const tcp::endpoint& e)
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

    void stop();

    // Links (network thread; peer_mesh_links.cpp).
    void start_accept();
    void on_accepted(tcp::socket socket);
    bool admit(const asio::ip::address& source, const std::string& remote);
    void dial(Peer& p);
    void schedule_redial(Peer& p);
    void arm_deadline(const std::shared_ptr<Connection>& conn, std::chrono::milliseconds timeout, std::string what);
    void fail(std::shared_ptr<Connection> conn, const std::string& reason, LogLevel level);
    static std::string describe(const Connection& conn);
    void start_tls(const std::shared_ptr<Connection>& conn, asio::ssl::stream_base::handshake_type side);
    void send_hello(const std::shared_ptr<Connection>& conn, const Hello& hello);
    void on_hello(std::shared_ptr<Connection> conn, const Hello& hello);
    Result<Peer*> check_hello(const Connection& conn, const Hello& hello) const;
    void adopt(const std::shared_ptr<Connection>& conn, Peer* p);
    void establish(const std::shared_ptr<Connection>& conn, const Hello& hello);

    // Switching and flow control (peer_mesh_traffic.cpp): receiving on the
    // network thread, sending from the device's thread too.
    void start_read(std::shared_ptr<Connection> conn);
    void drain(std::shared_ptr<Connection> conn);
    void on_message(const std::shared_ptr<Connection>& conn, Message& message);
    template <typename Done>
    void write(const std::shared_ptr<Connection>& conn, Done done);
    void on_frame(Peer& p, std::vector<uint8_t> frame);
    void resume_receive();
    bool deliver_backlog();
    bool blocked(const Peer& p) const { return p.held || p.marker_held || !backlog.empty(); }
    bool try_send(std::span<const uint8_t> frame);  // any thread
    void wake_writer(Peer& p);                      // lock held
    void flush_staged(Peer& p);
    void start_write(Peer& p);
    void on_written(Peer& p, const std::shared_ptr<Connection>& conn, std::error_code ec);
    void maybe_transmit_ready();

    // Epochs and controllers (network thread; peer_mesh_epoch.cpp).
    void on_marker(Peer& p, uint64_t epoch);
    void watch_unadopted_epoch(uint64_t epoch, const std::string& from);
    void do_cut(uint64_t epoch);
    void release(const std::vector<size_t>& peers);
    void check_cut_complete();
    void fail_epoch(const std::string& why);
    void queue_bytes(Peer& p, const std::vector<uint8_t>& bytes);
    void on_request(const std::shared_ptr<Connection>& conn, const nlohmann::json& request);
    void write_replies(const std::shared_ptr<Connection>& conn);
    void arm_idle(const std::shared_ptr<Connection>& conn);

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
    PeerMessageSink* message_sink = nullptr;
    ControllerRequestHandler* request_handler = nullptr;
    std::vector<std::shared_ptr<Connection>> controllers;
    // A restored VM's channel state, delivered first: (peer index, frame).
    std::deque<std::pair<size_t, std::vector<uint8_t>>> backlog;
    ChannelCut cut;
    bool delivery_held = false;
    // What wait_channel_state() waits for; guarded by epoch_mutex.
    std::mutex epoch_mutex;
    std::condition_variable epoch_cv;
    // With `mutex`: a peer's queue drained, or a peer's link went down
    // (send_parity waits for room).
    std::condition_variable room_cv;
    std::map<uint64_t, Result<ChannelState>> epoch_results;
};

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

}  // namespace vvmm::net
