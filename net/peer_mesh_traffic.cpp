// PeerMesh switching and flow control: reading and decoding messages,
// frames to the guest (held while the guest cannot take them), the guest's
// frames to each peer's send queue, and the writes that drain the queues.
#include "net/peer_mesh_state.hpp"

namespace vvmm::net {

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
        if (message_sink) guard_handler(*conn, message, [&] {
            message_sink->on_control(conn->peer->id, control->type, control->epoch, control->body);
        });
        else log_warn("peer " + conn->peer->name + " sent " + std::string(message_name(message)) +
                      ", but this VMM is not part of a cluster; ignored");
    } else if (const ParityMessage* parity = std::get_if<ParityMessage>(&message)) {
        if (message_sink) guard_handler(*conn, message, [&] { message_sink->on_parity(conn->peer->id, *parity); });
    } else {
        fail(conn, "protocol error: a peer sent " + std::string(message_name(message)), LogLevel::error);
    }
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
    room_cv.notify_all();
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

}  // namespace vvmm::net
