// PeerMesh links: accepting and dialling connections, redialling with
// backoff, admission before authentication, the TLS handshake and HELLO
// (who is who), and closing a connection with the reason logged.
#include "net/peer_mesh_state.hpp"

namespace vvmm::net {

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
        if (message_sink) message_sink->on_peer_lost(p->id);
    }
    p->conn.reset();
    {
        std::lock_guard lock(mutex);
        p->linked = false;
        p->writer_active = false;
        p->queue.batch_done();  // the batch in flight is lost with the connection
        mac_table.forget_peer(p->index);
    }
    room_cv.notify_all();
    if (was_established)
        log_line(level, "lost connection to peer " + p->name + ": " + reason +
                            (p->we_dial ? "; reconnecting" : "; waiting for it to reconnect"));
    else
        log_line(level, describe(*conn) + ": " + reason);
    if (p->we_dial) schedule_redial(*p);
    // A peer that is not connected no longer refuses frames.
    maybe_transmit_ready();
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

}  // namespace vvmm::net
