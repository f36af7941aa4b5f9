// PeerMesh's part in cluster epochs: markers from peers, the cut of each
// channel and the frames in flight at it, the result wait_channel_state()
// waits for, and the controllers' requests (vvmm checkpoint --all, list).
#include "net/peer_mesh_state.hpp"

namespace vvmm::net {

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
    if (!request_handler) {
        append_ctl_reply(conn->replies, {{"ok", false}, {"error", "this VMM is not part of a cluster"}});
        write_replies(conn);
        return;
    }
    // The reply may come from another thread, much later (a checkpoint):
    // it is written on the network thread, if the controller is still there.
    std::weak_ptr<Connection> weak = conn;
    request_handler->on_request(request, [this, weak](nlohmann::json reply) {
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

}  // namespace vvmm::net
