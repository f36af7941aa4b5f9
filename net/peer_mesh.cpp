#include "net/peer_mesh.hpp"
#include "net/peer_mesh_state.hpp"

namespace vvmm::net {

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

nlohmann::json PeerMesh::report() const
{
    State& s = *state_;
    return s.on_network_thread([&s] {
        static constexpr const char* kStages[] = {"connecting", "tls_handshake", "awaiting_hello", "established"};
        std::lock_guard lock(s.mutex);
        nlohmann::json peers = nlohmann::json::array();
        for (const auto& p : s.peers) {
            nlohmann::json j = {{"peer", p->name},
                                {"id", p->id},
                                {"linked", p->linked},
                                {"queued_bytes", p->queue.bytes()},
                                {"writer_active", p->writer_active},
                                {"frame_refused_by_guest", p->held.has_value()},
                                {"marker_held", p->marker_held}};
            if (p->conn) {
                j["stage"] = kStages[static_cast<size_t>(p->conn->stage)];
                j["reading"] = p->conn->reading;
                j["write_in_flight"] = p->conn->write_in_flight;
            }
            peers.push_back(std::move(j));
        }
        return nlohmann::json{{"backend", "peer"},
                              {"guest_tx_blocked", s.tx_blocked},
                              {"restore_backlog_frames", s.backlog.size()},
                              {"delivery_held", s.delivery_held},
                              {"peers", std::move(peers)}};
    });
}

std::vector<std::string> PeerMesh::connected_peer_ids() const
{
    std::lock_guard lock(state_->mutex);
    std::vector<std::string> ids;
    for (const auto& p : state_->peers)
        if (p->linked) ids.push_back(p->id);
    return ids;
}

void PeerMesh::set_message_sink(PeerMessageSink* sink) { state_->message_sink = sink; }
void PeerMesh::set_request_handler(ControllerRequestHandler* handler) { state_->request_handler = handler; }

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

Result<void> PeerMesh::send_parity(const std::string& peer, const ParityMessage& m,
                                   std::chrono::steady_clock::time_point deadline)
{
    State& s = *state_;
    auto target = std::find_if(s.peers.begin(), s.peers.end(), [&](const auto& p) { return p->id == peer; });
    if (target == s.peers.end()) return Error("no peer '" + peer + "' to send parity to");
    Peer& p = **target;
    std::vector<uint8_t> bytes;
    append_parity(bytes, m.epoch, m.set, m.member, m.offset, m.data);
    std::unique_lock lock(s.mutex);
    for (;;) {
        if (!p.linked) return Error("peer " + peer + " is not connected");
        if (p.queue.has_room(bytes.size())) break;
        if (s.room_cv.wait_until(lock, deadline) == std::cv_status::timeout && !p.queue.has_room(bytes.size()))
            return Error("sending parity to " + peer + " made no progress before the epoch's deadline");
    }
    p.queue.push_bytes(bytes);
    s.wake_writer(p);
    return ok();
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

