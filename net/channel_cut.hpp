// The receive side of a cluster checkpoint's cut, for one VMM (Chandy and
// Lamport's snapshot with FIFO channels, which the peer connections are).
// Pure: the peer mesh feeds it events and does what it answers; the unit
// test drives it on a simulated network.
//
// For epoch E, each incoming connection (one per peer) goes through:
//   before the local capture: frames reach the guest as usual; a MARKER(E)
//     that arrives now means everything after it on that connection was sent
//     after the sender's cut, so the connection is held (not read) until the
//     local capture — otherwise the guest could receive a frame its sender's
//     checkpoint says was never sent;
//   after the local capture, until MARKER(E): frames are in flight across the
//     cut; they are recorded (and still reach the guest, which runs);
//   after MARKER(E): nothing more to record.
// The channel state is complete when every connection's MARKER(E) came
// after the capture. At restore, each connection's recorded frames are
// delivered before anything new from it.
#pragma once

#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::net {

using RecordedFrames = std::vector<std::vector<uint8_t>>;

// How far an epoch number may jump past the newest one a VMM knows of. An
// honest initiator uses the newest it knows + 1, and VMMs of one cluster
// see the same epochs (an epoch needs every VM connected), so their views
// differ by a few aborted epochs at most; the bound stops a buggy or hostile
// peer from pushing the numbers to 2^64 - 1, after which no epoch could
// start (reaching it 1024 at a time takes 2^54 epochs).
inline constexpr uint64_t kMaxEpochStep = 1024;

// What one epoch may record: a restore refuses more (channel_state.cpp), and
// a peer that never sends its marker must not make this VMM hold unbounded
// memory. Past either bound the epoch fails.
struct RecordLimits {
    uint64_t frames_per_peer = 1u << 20;
    // Half the 1 GiB a restore reads: room for the file's own overhead, and
    // for the seconds of traffic a live checkpoint's skew between VMs holds.
    uint64_t bytes = 512ull << 20;
};

class ChannelCut {
public:
    explicit ChannelCut(size_t peers, RecordLimits limits = {}) : peers_(peers), limits_(limits) {}

    enum class MarkerAction {
        proceed,  // go on reading the connection
        hold,     // stop reading it until captured() lists it
        ignore,   // an epoch that ended, or another one than the running one
    };
    // A MARKER of a new epoch that comes before its PREPARE (they travel on
    // different connections) begins that epoch here, and holds. Such an
    // epoch is tentative until begin() adopts it. A marker is not an
    // authority on epoch numbers (any peer sends them): a tentative epoch
    // that ends without being adopted, or that begin() of another epoch
    // replaces, is remembered as abandoned (that one number is refused
    // later: its markers are spent) but moves no floor, so a bogus number
    // blocks nothing else. Connections it held are read again at the
    // replacing epoch's capture, as connections whose marker has not come.

    // PREPARE(E) or this VMM starts E; the caller checked who asked (see
    // coord/cluster_member). Refused while another adopted epoch runs or if
    // E is not newer than every epoch that ended here.
    Result<void> begin(uint64_t epoch);
    MarkerAction on_marker(size_t peer, uint64_t epoch);
    // The local state is captured (VM paused). Returns the held peers, to
    // read again. Recording starts for every peer whose marker has not come.
    std::vector<size_t> captured();
    // A frame from `peer` reached this VMM (delivered to the guest or not):
    // true if it is in flight across the cut and was recorded.
    bool on_frame(size_t peer, const std::vector<uint8_t>& frame);
    // A frame in flight did not fit RecordLimits: this epoch's channel state
    // is incomplete and the epoch must fail. True once, at the first such frame.
    bool take_overflow();
    // Every peer's marker came after the capture.
    bool complete() const;
    // The recorded frames, per peer; ends the epoch.
    std::vector<RecordedFrames> finish();
    // Epoch `epoch` ends without a checkpoint (ABORT, or this VMM gave up);
    // later markers of it are stale. Returns the held peers to read again.
    // An epoch that is not running here moves the floor of new epochs only
    // by a bounded step (kMaxEpochStep past the newest begun or ended here).
    std::vector<size_t> abort(uint64_t epoch);

    std::optional<uint64_t> epoch() const { return epoch_; }
    bool capturing_done() const { return captured_; }
    size_t missing_markers() const;

private:
    // held_early: held for a tentative epoch that begin() replaced; read
    // again at the capture, then recording like an open connection.
    enum class Channel { open, held, held_early, recording, closed };
    void start(uint64_t epoch, bool adopted);
    void end();
    void abandon(uint64_t epoch);
    bool abandoned(uint64_t epoch) const;
    void reset_recording_bounds();
    size_t peers_;
    std::optional<uint64_t> epoch_;
    bool adopted_ = false;  // epoch_ was begun by begin(), not only by a marker
    uint64_t last_ended_ = 0;
    uint64_t last_begun_ = 0;
    std::deque<uint64_t> abandoned_;  // the last few tentative epochs that were never adopted
    bool captured_ = false;
    std::vector<Channel> channels_;
    std::vector<RecordedFrames> recorded_;
    RecordLimits limits_;
    uint64_t recorded_bytes_ = 0;
    bool overflowed_ = false;  // this epoch
    bool overflow_taken_ = false;
};

}  // namespace vvmm::net
