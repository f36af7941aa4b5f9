// The cut protocol on a simulated network: N VMMs whose guests send
// numbered frames to random peers over FIFO channels with random delays, an
// initiator whose PREPARE reaches each VMM at a random time, captures that
// take a random time (live rounds), markers overtaking PREPARE. Every cut
// must be consistent: for each channel i->j, the frames j's guest had at j's
// capture plus the frames recorded for i->j are exactly the frames i had
// sent at i's capture, in order, none twice.
#include <doctest/doctest.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <random>

#include "net/channel_cut.hpp"
#include "net/channel_state.hpp"

using vvmm::net::ChannelCut;
using vvmm::net::RecordedFrames;

namespace {

struct Msg {
    enum Kind { frame, marker, prepare, abort } kind;
    uint64_t value;  // frame: sequence number on its channel; marker/prepare: epoch
    uint64_t arrival;
};

std::vector<uint8_t> frame_bytes(uint64_t seq)
{
    std::vector<uint8_t> f(8);
    for (int i = 0; i < 8; ++i) f[i] = static_cast<uint8_t>(seq >> (8 * i));
    return f;
}

uint64_t frame_seq(const std::vector<uint8_t>& f)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= uint64_t(f[i]) << (8 * i);
    return v;
}

class Simulation {
public:
    Simulation(size_t n, uint64_t seed, uint64_t max_delay)
        : n_(n), rng_(seed), max_delay_(max_delay), chan_(n * n), last_arrival_(n * n, 0),
          sent_(n * n, 0), received_(n * n), held_(n * n, false), nodes_(n)
    {
        for (size_t i = 0; i < n; ++i) nodes_[i].cut = std::make_unique<ChannelCut>(n - 1);
    }

    // One epoch from `initiator`, checked when every VMM's cut is complete.
    // With `abort_at` the epoch is aborted at that tick instead.
    void run_epoch(uint64_t epoch, size_t initiator, std::optional<uint64_t> abort_at)
    {
        epoch_ = epoch;
        for (auto& node : nodes_) node.snapshot.reset();
        // The initiator begins and captures later, like every VMM; PREPARE
        // goes in-band on its connections.
        REQUIRE(nodes_[initiator].cut->begin(epoch).ok());
        schedule_capture(initiator);
        for (size_t j = 0; j < n_; ++j)
            if (j != initiator) push(initiator, j, Msg::prepare, epoch);
        const uint64_t start = now_;
        while (!all_complete()) {
            if (now_ - start >= 100000) {
                for (size_t i = 0; i < n_; ++i)
                    MESSAGE("node " << i << " epoch " << nodes_[i].cut->epoch().value_or(0) << " captured "
                                    << nodes_[i].cut->capturing_done() << " missing " << nodes_[i].cut->missing_markers()
                                    << " capture_at " << nodes_[i].capture_at.value_or(0) << " now " << now_);
            }
            REQUIRE(now_ - start < 100000);  // no deadlock
            if (abort_at && now_ - start == *abort_at) {
                // ABORT travels in-band too, behind PREPARE.
                release(initiator, nodes_[initiator].cut->abort(epoch));
                nodes_[initiator].capture_at.reset();
                for (size_t j = 0; j < n_; ++j)
                    if (j != initiator) push(initiator, j, Msg::abort, epoch);
                while (!all_idle()) {
                    REQUIRE(now_ - start < 100000);
                    tick();
                }
                return;
            }
            tick();
        }
        check_cut();
        drain_ticks(20);
    }

private:
    struct Node {
        std::unique_ptr<ChannelCut> cut;
        std::optional<uint64_t> capture_at;
        // At capture: frames sent on each outgoing channel, frames received on each incoming one.
        struct Snapshot {
            std::vector<uint64_t> sent, received;
        };
        std::optional<Snapshot> snapshot;
    };

    size_t ch(size_t from, size_t to) const { return from * n_ + to; }
    // A peer index as seen by `self` (peers exclude self).
    static size_t peer_index(size_t self, size_t other) { return other < self ? other : other - 1; }
    static size_t node_of(size_t self, size_t peer) { return peer < self ? peer : peer + 1; }

    void push(size_t from, size_t to, Msg::Kind kind, uint64_t value)
    {
        std::uniform_int_distribution<uint64_t> d(0, max_delay_);
        const size_t c = ch(from, to);
        last_arrival_[c] = std::max(last_arrival_[c], now_ + d(rng_));  // FIFO
        chan_[c].push_back({kind, value, last_arrival_[c]});
    }

    void schedule_capture(size_t i)
    {
        if (nodes_[i].capture_at || nodes_[i].snapshot) return;
        std::uniform_int_distribution<uint64_t> d(0, 3 * max_delay_);
        nodes_[i].capture_at = now_ + d(rng_);
    }

    void capture(size_t i)
    {
        Node& node = nodes_[i];
        node.capture_at.reset();
        Node::Snapshot s;
        for (size_t j = 0; j < n_; ++j) {
            s.sent.push_back(sent_[ch(i, j)]);
            s.received.push_back(received_[ch(j, i)].size());
        }
        node.snapshot = s;
        release(i, node.cut->captured());
        // Markers go out before any later frame of this VMM.
        for (size_t j = 0; j < n_; ++j)
            if (j != i) push(i, j, Msg::marker, epoch_);
    }

    void release(size_t i, const std::vector<size_t>& peers)
    {
        for (size_t p : peers) held_[ch(node_of(i, p), i)] = false;
    }

    void receive(size_t from, size_t to)
    {
        auto& q = chan_[ch(from, to)];
        while (!q.empty() && q.front().arrival <= now_ && !held_[ch(from, to)]) {
            const Msg m = q.front();
            q.pop_front();
            Node& node = nodes_[to];
            const size_t p = peer_index(to, from);
            if (m.kind == Msg::frame) {
                node.cut->on_frame(p, frame_bytes(m.value));
                received_[ch(from, to)].push_back(m.value);  // the guest runs: it gets the frame
            } else if (m.kind == Msg::prepare) {
                // A stale PREPARE (its epoch aborted, a newer one began here by marker) is refused.
                if (node.cut->begin(m.value).ok()) schedule_capture(to);
            } else if (m.kind == Msg::abort) {
                if (node.cut->epoch() == m.value) node.capture_at.reset();
                release(to, node.cut->abort(m.value));
            } else if (node.cut->on_marker(p, m.value) == ChannelCut::MarkerAction::hold) {
                held_[ch(from, to)] = true;
            }
        }
    }

    void tick()
    {
        ++now_;
        std::uniform_int_distribution<size_t> pick(0, n_ - 1);
        std::bernoulli_distribution send(0.6);
        for (size_t i = 0; i < n_; ++i) {
            if (nodes_[i].capture_at && *nodes_[i].capture_at <= now_) capture(i);
            if (send(rng_)) {
                size_t j = pick(rng_);
                if (j == i) j = (j + 1) % n_;
                push(i, j, Msg::frame, sent_[ch(i, j)]++);
            }
        }
        // Receive in a random order of channels.
        std::vector<size_t> order(n_ * n_);
        for (size_t k = 0; k < order.size(); ++k) order[k] = k;
        std::shuffle(order.begin(), order.end(), rng_);
        for (size_t c : order)
            if (c / n_ != c % n_) receive(c / n_, c % n_);
    }

    void drain_ticks(unsigned n)
    {
        for (unsigned k = 0; k < n; ++k) tick();
    }

    // An aborted epoch is over once every VMM has heard its ABORT (the next
    // epoch is started by a user much later; if it overlapped, a VMM still in
    // the old one would refuse the new PREPARE and that epoch would abort).
    bool all_idle()
    {
        for (size_t i = 0; i < n_; ++i)
            for (size_t j = 0; j < n_; ++j) {
                if (held_[ch(i, j)] || nodes_[j].cut->epoch()) return false;
                for (const Msg& m : chan_[ch(i, j)])
                    if (m.kind == Msg::prepare || m.kind == Msg::abort) return false;
            }
        return true;
    }

    bool all_complete()
    {
        for (auto& node : nodes_)
            if (!node.cut->complete()) return false;
        return true;
    }

    void check_cut()
    {
        for (size_t j = 0; j < n_; ++j) {
            auto recorded = nodes_[j].cut->finish();
            REQUIRE(recorded.size() == n_ - 1);
            for (size_t i = 0; i < n_; ++i) {
                if (i == j) continue;
                const uint64_t sent = nodes_[i].snapshot->sent[j];
                const uint64_t got = nodes_[j].snapshot->received[i];
                // The guest's received frames are in order 0..got-1 (FIFO, never held mid-frame).
                CHECK(got <= sent);  // no frame received that was not sent
                const auto& rec = recorded[peer_index(j, i)];
                CHECK(got + rec.size() == sent);  // none lost, none twice
                for (size_t k = 0; k < rec.size(); ++k) CHECK(frame_seq(rec[k]) == got + k);
                ++channels_checked;
                frames_in_flight += rec.size();
            }
            CHECK_FALSE(nodes_[j].cut->epoch());  // finish() leaves no epoch behind
        }
    }

public:
    uint64_t channels_checked = 0, frames_in_flight = 0;

private:
    size_t n_;
    std::mt19937_64 rng_;
    uint64_t max_delay_;
    uint64_t now_ = 0, epoch_ = 0;
    std::vector<std::deque<Msg>> chan_;
    std::vector<uint64_t> last_arrival_;
    std::vector<uint64_t> sent_;
    std::vector<std::vector<uint64_t>> received_;
    std::vector<bool> held_;
    std::vector<Node> nodes_;
};

}  // namespace

TEST_CASE("channel cut: every simulated cut is consistent")
{
    uint64_t channels = 0, in_flight = 0;
    for (uint64_t seed = 1; seed <= 200; ++seed) {
        const size_t n = 2 + seed % 5;
        Simulation sim(n, seed, 1 + seed % 17);
        std::mt19937_64 r(seed);
        for (uint64_t e = 1; e <= 4; ++e) {
            // Every third epoch is aborted part-way: nothing may stay held.
            const bool abort = (seed + e) % 3 == 0;
            sim.run_epoch(e, r() % n, abort ? std::optional<uint64_t>(r() % 20) : std::nullopt);
        }
        channels += sim.channels_checked;
        in_flight += sim.frames_in_flight;
    }
    CHECK(channels > 1000);
    CHECK(in_flight > 100);  // the cuts did catch frames in flight
}

TEST_CASE("channel cut: marker before capture holds, after capture closes recording")
{
    ChannelCut cut(2);
    REQUIRE(cut.begin(7).ok());
    CHECK_FALSE(cut.begin(8).ok());
    CHECK(cut.on_marker(0, 6) == ChannelCut::MarkerAction::ignore);
    CHECK(cut.on_marker(0, 7) == ChannelCut::MarkerAction::hold);
    CHECK_FALSE(cut.on_frame(1, {1}));  // before the capture: not in flight
    const auto released = cut.captured();
    REQUIRE(released.size() == 1);
    CHECK(released[0] == 0);
    CHECK(cut.on_frame(1, {2}));
    CHECK_FALSE(cut.on_frame(0, {3}));  // peer 0's marker came first: after its cut
    CHECK_FALSE(cut.complete());
    CHECK(cut.on_marker(1, 7) == ChannelCut::MarkerAction::proceed);
    CHECK(cut.complete());
    const auto rec = cut.finish();
    CHECK(rec[0].empty());
    REQUIRE(rec[1].size() == 1);
    CHECK(rec[1][0] == std::vector<uint8_t>{2});
    CHECK_FALSE(cut.begin(7).ok());  // ended: not new
    CHECK(cut.on_marker(0, 7) == ChannelCut::MarkerAction::ignore);
    // A marker of a new epoch before its PREPARE begins it and holds.
    CHECK(cut.on_marker(1, 8) == ChannelCut::MarkerAction::hold);
    CHECK(cut.epoch() == 8);
    CHECK(cut.begin(8).ok());
    const auto unheld = cut.abort(8);
    REQUIRE(unheld.size() == 1);
    CHECK(unheld[0] == 1);
    CHECK(cut.on_marker(0, 8) == ChannelCut::MarkerAction::ignore);  // aborted: stale
}

TEST_CASE("channel cut: recording past its limits fails the epoch once, and the next epoch starts afresh")
{
    ChannelCut cut(2, {.frames_per_peer = 3, .bytes = 100});
    REQUIRE(cut.begin(1).ok());
    cut.captured();
    CHECK(cut.on_frame(0, std::vector<uint8_t>(10)));
    CHECK(cut.on_frame(0, std::vector<uint8_t>(10)));
    CHECK(cut.on_frame(0, std::vector<uint8_t>(10)));
    CHECK_FALSE(cut.take_overflow());
    CHECK_FALSE(cut.on_frame(0, std::vector<uint8_t>(10)));  // a 4th frame from peer 0
    CHECK(cut.take_overflow());
    CHECK_FALSE(cut.take_overflow());                        // reported once
    CHECK_FALSE(cut.on_frame(1, std::vector<uint8_t>(10)));  // nothing more is kept
    cut.abort(1);

    REQUIRE(cut.begin(2).ok());
    cut.captured();
    CHECK(cut.on_frame(1, std::vector<uint8_t>(60)));
    CHECK_FALSE(cut.on_frame(0, std::vector<uint8_t>(60)));  // 120 bytes > 100 across peers
    CHECK(cut.take_overflow());
    CHECK(cut.on_marker(0, 2) == ChannelCut::MarkerAction::proceed);
    CHECK(cut.on_marker(1, 2) == ChannelCut::MarkerAction::proceed);
    const auto recorded = cut.finish();
    CHECK(recorded[1].size() == 1);
    CHECK(recorded[0].empty());

    REQUIRE(cut.begin(3).ok());
    cut.captured();
    CHECK(cut.on_frame(0, std::vector<uint8_t>(60)));
    CHECK_FALSE(cut.take_overflow());
}

TEST_CASE("channel state: round trip, and every truncation or bad field is refused")
{
    using vvmm::net::ChannelState;
    ChannelState s;
    s.epoch = 42;
    s.peers.push_back({"vm1", {std::vector<uint8_t>(60, 1), std::vector<uint8_t>(1514, 2)}});
    s.peers.push_back({"vm2", {}});
    const auto bytes = vvmm::net::encode_channel_state(s);
    auto back = vvmm::net::decode_channel_state(bytes);
    REQUIRE(back.ok());
    CHECK(back->epoch == 42);
    REQUIRE(back->peers.size() == 2);
    CHECK(back->peers[0].id == "vm1");
    CHECK(back->peers[0].frames == s.peers[0].frames);
    CHECK(back->peers[1].frames.empty());
    CHECK(back->frame_count() == 2);
    for (size_t n = 0; n < bytes.size(); ++n)
        CHECK_FALSE(vvmm::net::decode_channel_state(std::span(bytes).first(n)).ok());
    auto longer = bytes;
    longer.push_back(0);
    CHECK_FALSE(vvmm::net::decode_channel_state(longer).ok());
    auto bad_magic = bytes;
    bad_magic[0] ^= 1;
    CHECK_FALSE(vvmm::net::decode_channel_state(bad_magic).ok());
    ChannelState runt;
    runt.peers.push_back({"vm1", {std::vector<uint8_t>(10, 0)}});  // shorter than an Ethernet header
    CHECK_FALSE(vvmm::net::decode_channel_state(vvmm::net::encode_channel_state(runt)).ok());
}

TEST_CASE("channel cut: a marker's epoch is tentative; a bogus one never blocks later epochs")
{
    constexpr uint64_t kLast = ~0ull;
    {
        // MARKER(2^64-1) with no PREPARE: the mesh abandons it (abort), and epoch 5 still starts.
        ChannelCut cut(2);
        CHECK(cut.on_marker(0, kLast) == ChannelCut::MarkerAction::hold);
        CHECK(cut.abort(kLast) == std::vector<size_t>{0});
        CHECK(cut.on_marker(1, kLast) == ChannelCut::MarkerAction::ignore);  // that one number is spent
        CHECK_FALSE(cut.begin(kLast).ok());
        REQUIRE(cut.begin(5).ok());
        CHECK(cut.on_marker(1, 5) == ChannelCut::MarkerAction::hold);
    }
    {
        // A PREPARE while the bogus epoch holds a connection: the real epoch replaces it, and the
        // held connection is read again at the capture, recording until its own marker.
        ChannelCut cut(2);
        CHECK(cut.on_marker(0, kLast) == ChannelCut::MarkerAction::hold);
        REQUIRE(cut.begin(5).ok());
        CHECK(cut.epoch() == 5);
        CHECK_FALSE(cut.begin(6).ok());  // 5 is adopted: it is not replaced
        CHECK(cut.captured() == std::vector<size_t>{0});
        CHECK(cut.on_frame(0, {7}));  // sent before peer 0's cut of epoch 5: in flight
        CHECK(cut.on_marker(0, 5) == ChannelCut::MarkerAction::proceed);
        CHECK(cut.on_marker(1, 5) == ChannelCut::MarkerAction::proceed);
        REQUIRE(cut.complete());
        CHECK(cut.finish()[0] == RecordedFrames{{7}});
        REQUIRE(cut.begin(6).ok());  // the bogus number left no floor behind
        CHECK(cut.abort(6).empty());
        CHECK(cut.on_marker(1, kLast) == ChannelCut::MarkerAction::ignore);  // replaced: abandoned
    }
    {
        // An aborted epoch the cut never ran moves the floor only by a bounded step.
        ChannelCut cut(2);
        cut.abort(kLast);
        REQUIRE(cut.begin(5).ok());
        cut.abort(5);
        cut.abort(5 + vvmm::net::kMaxEpochStep + 1);
        CHECK(cut.begin(6).ok());
        cut.abort(6);
        cut.abort(9);  // a PREPARE refused here, then its ABORT: its late markers are stale
        CHECK(cut.on_marker(0, 9) == ChannelCut::MarkerAction::ignore);
        CHECK(cut.begin(10).ok());
    }
    {
        // A tentative epoch's held connection comes back if the real epoch aborts before its capture.
        ChannelCut cut(3);
        CHECK(cut.on_marker(2, kLast) == ChannelCut::MarkerAction::hold);
        REQUIRE(cut.begin(3).ok());
        CHECK(cut.on_marker(1, 3) == ChannelCut::MarkerAction::hold);
        auto released = cut.abort(3);
        std::sort(released.begin(), released.end());
        CHECK(released == std::vector<size_t>{1, 2});
    }
}
