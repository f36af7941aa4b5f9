// The peer mesh: a distributed Ethernet switch. Every VMM of a cluster holds
// exactly one TLS-over-TCP connection to every other VMM and sends its guest's frames
// straight to the peer (or peers) they are for; nothing is forwarded twice
// and there is no central switch. Wire format: peer_protocol.hpp.
//
// Connections. Of each pair, the VMM whose listen address sorts lower
// (SocketAddress's order) dials the other; the higher one only accepts, and
// refuses a dial from a peer it should dial itself, so a pair never has two
// connections. The dialer retries with exponential backoff (50 ms doubling
// to 2 s) while the peer is not up yet or after the connection drops; the
// accepting side recognises the dialer by the listen address in its HELLO and
// refuses anyone that is not a configured peer. A new HELLO from a peer that
// already has a connection replaces it (the peer restarted).
//
// Switching (MacTable, under the mesh's lock). Unicast to a MAC learned from
// a peer (the source of a received frame, or the guest MAC in its HELLO,
// which frames from other peers cannot take over) goes to that peer only;
// broadcast, multicast and unknown unicast go to every configured peer.
// Received frames are never forwarded: the sender reaches every peer itself.
// A peer's MACs are forgotten when its connection drops, so frames for it
// are flooded until it is back.
//
// Flow control (net_backend.hpp): each peer has a send queue bounded at
// PeerMeshLimits::send_queue_bytes (encoded bytes, including the batch being
// written). While a peer is connected, a frame that does not fit makes
// try_send() refuse it — for every target, nothing queued — and the sink's
// transmit_ready() follows once every connected peer's queue is at most half
// full. While a peer is not connected (not up yet, or reconnecting), frames
// for it wait in its queue and are sent in order once it connects; when that
// queue is full, further frames for that peer only are dropped (rate-limited
// log) instead of refused, so one VMM that is down does not stop its guest's
// traffic to all others. Except while the cluster boots
// (PeerMeshLimits::boot_grace): a peer that never connected yet refuses
// like a connected one, so a booting cluster loses nothing. Frames
// already handed to a connection that then drops are lost, like the bytes in
// its kernel socket buffers; guests' TCP retransmits.
//
// Receive: messages are decoded and FRAMEs handed to
// FrameSink::deliver_to_guest() in the order each connection carried them.
// A refused frame is held (one per peer) and that peer's connection is no
// longer read, so TCP pushes back on its sender; receive_ready() re-offers
// held frames first and resumes reading. Memory per peer is bounded: one
// send queue, one decoder (one partial message plus one read), one held frame.
//
// Threads: one network thread runs an Asio io_context for all connections.
// Every FrameSink callback runs on it, one at a time, never with the mesh's
// lock held, so a sink may call try_send() or receive_ready() from inside a
// callback (receive_ready() only posts work to the network thread; it never
// re-enters deliver_to_guest()). try_send() and receive_ready() may be called
// from any thread; every write to a connection happens on the network thread
// (a TLS stream has one writer).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "net/channel_state.hpp"
#include "net/net_backend.hpp"
#include "net/net_spec.hpp"
#include "net/peer_protocol.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::net {

struct PeerMeshLimits {
    size_t send_queue_bytes = 256 * 1024;
    std::chrono::milliseconds backoff_initial{50};
    std::chrono::milliseconds backoff_max{2000};
    std::chrono::milliseconds connect_timeout{3000};
    std::chrono::milliseconds handshake_timeout{5000};
    // While the cluster boots (this long after start()), a peer that has not
    // connected yet pushes back on the guest like a connected one once its
    // queue is full, instead of having frames dropped: VMMs started within
    // this of each other lose nothing however fast their guests send.
    std::chrono::milliseconds boot_grace{10000};
    // A write to a connected peer that makes no progress for this long drops
    // that peer (logged), so one stopped VMM does not stall the others: its
    // frames are then dropped like those of any peer that is away.
    std::chrono::milliseconds write_stall_timeout{10000};
    // A controller with no request in flight is closed after this long.
    std::chrono::milliseconds controller_idle_timeout{30000};
    // Unauthenticated connections: at most this many at once, and at most
    // per_source_handshakes from one address. When all are taken, a new one
    // from a configured peer's address evicts the oldest from elsewhere, so
    // idle sockets cannot keep a restarting peer out.
    size_t max_handshakes = 16;
    size_t per_source_handshakes = 4;
    // How long create() keeps trying a listen address that is in use: the
    // VMM this one replaces (a restore right after kill -9) releases its
    // port only when its exit completes, which can lag behind the kill.
    std::chrono::milliseconds listen_busy_wait{5000};
    // A MARKER can only come before this VMM's PREPARE of the same epoch by
    // the network's delay: an epoch begun by a marker and not adopted by
    // begin_epoch() within this is abandoned (its initiator died
    // mid-PREPARE, or the marker is bogus), and the connection it held is
    // read again.
    std::chrono::milliseconds unadopted_epoch_timeout{30000};
};

// Who may join: peers and controllers prove they hold the cluster's secret
// in the TLS handshake (tls_psk.hpp). Without a cluster (a bare `--net peer`),
// the cluster name is "-" and the secret empty: the channel is encrypted, but
// anyone who can connect to the port is a peer (logged as a warning).
struct MeshCluster {
    std::string name = "-";
    std::vector<uint8_t> secret;
    // The VMM id expected at each of spec.peers (same order); empty: any id,
    // learned from HELLO.
    std::vector<std::string> peer_ids;
};

// What the mesh receives from its peers besides frames and markers: the
// epoch protocol's messages and parity, whose meaning is coord/'s (the mesh
// only carries them, in order, behind the frames sent before them), and the
// loss of a peer. Called on the network thread, never with the mesh's lock
// held; must not block.
class PeerMessageSink {
public:
    virtual ~PeerMessageSink() = default;
    // PREPARE, DONE, COMMIT, ABORT, RESTORED, PARITY_BEGIN or PARITY_END
    // (is_control_type) from the peer with VMM id `peer`.
    virtual void on_control(const std::string& peer, MessageType type, uint64_t epoch, const nlohmann::json& body) = 0;
    virtual void on_peer_lost(const std::string& peer) = 0;
    // A PARITY update from the peer with VMM id `peer` (diskless clusters).
    virtual void on_parity(const std::string& peer, const ParityMessage& message) { (void)peer, (void)message; }
};

// Serves the requests of controllers (a CLI that proved the cluster's secret
// on this VMM's peer port); what a request means is coord/'s. The mesh keeps
// one request in flight per controller and closes idle ones.
class ControllerRequestHandler {
public:
    virtual ~ControllerRequestHandler() = default;
    // Called on the network thread; `reply` may be called later, from any
    // thread, once.
    virtual void on_request(const nlohmann::json& request, std::function<void(nlohmann::json)> reply) = 0;
};

class PeerMesh final : public NetBackend {
public:
    // Binds the listen socket (so a busy port is reported here); connects
    // nothing until start().
    static Result<std::unique_ptr<PeerMesh>> create(const PeerNetSpec& spec, const PeerMeshLimits& limits = {},
                                                    MeshCluster cluster = {});
    ~PeerMesh() override;

    void attach(FrameSink* sink) override;
    // Starts the network thread: accepting, and dialing the peers this VMM
    // dials. Fails if no sink is attached or it already started.
    Result<void> start() override;
    bool try_send(std::span<const uint8_t> frame) override;
    void receive_ready() override;
    void begin_batch() override;
    void end_batch() override;
    // Joins the network thread and closes every connection. Must not be
    // called from a FrameSink callback. Idempotent; the destructor calls it.
    void stop() override;
    // Per peer: link state, queued bytes, a frame the guest refused, a held
    // MARKER; and the mesh's own holds (guest TX blocked, restore backlog).
    nlohmann::json report() const override;

    // Peers whose HELLO exchange completed and whose connection is up.
    size_t connected_peers() const;
    // The VMM ids of those peers.
    std::vector<std::string> connected_peer_ids() const;

    // ---- cluster ----
    // Before start(). Without a sink, such messages are dropped; without a
    // handler, controllers are told this VMM is not part of a cluster.
    void set_message_sink(PeerMessageSink* sink);
    void set_request_handler(ControllerRequestHandler* handler);
    // Before start(): a restored VM's channel state; its frames reach the
    // guest before any frame from the network.
    void set_restore_backlog(const ChannelState& state);
    // In-band, behind every frame queued before it; to one peer (by VMM id)
    // or, with an empty id, to all. Queued while a peer is not connected.
    void send_control(const std::string& peer, MessageType type, uint64_t epoch, const nlohmann::json& body);

    // A PARITY message to one peer, behind what is queued for it. Waits while
    // that peer's queue is full (parity is bulk: it must not outrun the
    // network); fails if the peer is not connected or at the deadline. Not
    // from the network thread.
    Result<void> send_parity(const std::string& peer, const ParityMessage& message,
                             std::chrono::steady_clock::time_point deadline);

    // The cut of epoch E (net/channel_cut.hpp; ckpt/epoch_cut.hpp says when
    // the checkpointer calls each). Safe from any thread, including the
    // network thread's callbacks.
    Result<void> begin_epoch(uint64_t epoch);
    void hold_delivery();
    void cut(uint64_t epoch);
    void release_delivery();
    // Waits for every peer's MARKER(E) after the cut; fails on abort_epoch(E),
    // a lost peer, or the deadline.
    Result<ChannelState> wait_channel_state(uint64_t epoch, std::chrono::steady_clock::time_point deadline);
    void abort_epoch(uint64_t epoch);

private:
    struct State;
    explicit PeerMesh(std::unique_ptr<State> state);
    std::unique_ptr<State> state_;
};

}  // namespace vvmm::net
