#include "net/channel_cut.hpp"

#include <algorithm>

namespace vvmm::net {

Result<void> ChannelCut::begin(uint64_t epoch)
{
    if (epoch_ && *epoch_ == epoch) {  // PREPARE after our own start or its marker, or twice
        adopted_ = true;
        last_begun_ = std::max(last_begun_, epoch);
        return ok();
    }
    if (epoch_ && adopted_) return Error("epoch " + std::to_string(*epoch_) + " is still running");
    if (epoch <= last_ended_)
        return Error("epoch " + std::to_string(epoch) + " is not newer than epoch " + std::to_string(last_ended_));
    if (abandoned(epoch))
        return Error("epoch " + std::to_string(epoch) + " was abandoned here (a marker began it, no PREPARE came)");
    // A tentative epoch (begun by a marker alone) gives way; what it holds
    // stays held until this epoch's capture.
    std::vector<Channel> early(peers_, Channel::open);
    if (epoch_) {
        abandon(*epoch_);
        for (size_t p = 0; p < channels_.size(); ++p)
            if (channels_[p] == Channel::held || channels_[p] == Channel::held_early) early[p] = Channel::held_early;
    }
    start(epoch, true);
    channels_ = std::move(early);
    return ok();
}

void ChannelCut::start(uint64_t epoch, bool adopted)
{
    epoch_ = epoch;
    adopted_ = adopted;
    if (adopted) last_begun_ = std::max(last_begun_, epoch);
    captured_ = false;
    channels_.assign(peers_, Channel::open);
    recorded_.assign(peers_, {});
    reset_recording_bounds();
}

void ChannelCut::abandon(uint64_t epoch)
{
    abandoned_.push_back(epoch);
    if (abandoned_.size() > 8) abandoned_.pop_front();
}

bool ChannelCut::abandoned(uint64_t epoch) const
{
    return std::find(abandoned_.begin(), abandoned_.end(), epoch) != abandoned_.end();
}

void ChannelCut::end()
{
    epoch_.reset();
    adopted_ = false;
    captured_ = false;
    channels_.clear();
    recorded_.clear();
    reset_recording_bounds();
}

ChannelCut::MarkerAction ChannelCut::on_marker(size_t peer, uint64_t epoch)
{
    if (peer >= peers_) return MarkerAction::ignore;
    if (!epoch_ && epoch > last_ended_ && !abandoned(epoch)) start(epoch, false);
    if (!epoch_ || *epoch_ != epoch) return MarkerAction::ignore;
    Channel& c = channels_[peer];
    switch (c) {
    case Channel::open:
        c = Channel::held;
        return MarkerAction::hold;
    case Channel::recording:
        c = Channel::closed;
        return MarkerAction::proceed;
    case Channel::held:
    case Channel::held_early:  // not read until the capture: cannot happen
    case Channel::closed: break;  // a second marker on one connection: the sender is confused
    }
    return MarkerAction::ignore;
}

std::vector<size_t> ChannelCut::captured()
{
    std::vector<size_t> released;
    if (!epoch_ || captured_) return released;
    captured_ = true;
    for (size_t p = 0; p < peers_; ++p) {
        if (channels_[p] == Channel::held) {
            channels_[p] = Channel::closed;  // its marker is in: nothing of it crosses the cut
            released.push_back(p);
        } else if (channels_[p] == Channel::held_early) {
            channels_[p] = Channel::recording;  // held for an epoch that never was: its marker is still to come
            released.push_back(p);
        } else if (channels_[p] == Channel::open) {
            channels_[p] = Channel::recording;
        }
    }
    return released;
}

bool ChannelCut::on_frame(size_t peer, const std::vector<uint8_t>& frame)
{
    if (peer >= peers_ || !epoch_ || channels_[peer] != Channel::recording) return false;
    if (overflowed_ || recorded_[peer].size() >= limits_.frames_per_peer ||
        recorded_bytes_ + frame.size() > limits_.bytes) {
        overflowed_ = true;
        return false;
    }
    recorded_[peer].push_back(frame);
    recorded_bytes_ += frame.size();
    return true;
}

void ChannelCut::reset_recording_bounds()
{
    recorded_bytes_ = 0;
    overflowed_ = false;
    overflow_taken_ = false;
}

bool ChannelCut::take_overflow()
{
    if (!overflowed_ || overflow_taken_) return false;
    overflow_taken_ = true;
    return true;
}

size_t ChannelCut::missing_markers() const
{
    if (!epoch_) return 0;
    return static_cast<size_t>(std::count_if(channels_.begin(), channels_.end(),
                                             [](Channel c) { return c != Channel::closed; }));
}

bool ChannelCut::complete() const { return epoch_ && captured_ && missing_markers() == 0; }

std::vector<RecordedFrames> ChannelCut::finish()
{
    auto out = std::move(recorded_);
    out.resize(peers_);
    if (epoch_ && adopted_) last_ended_ = std::max(last_ended_, *epoch_);
    end();
    return out;
}

std::vector<size_t> ChannelCut::abort(uint64_t epoch)
{
    std::vector<size_t> released;
    if (epoch_ && *epoch_ == epoch) {
        // A tentative epoch was never more than a peer's claim: it ends
        // without moving the floor (a marker of 2^64 - 1 must not stop
        // every later epoch).
        if (adopted_) last_ended_ = std::max(last_ended_, epoch);
        else abandon(epoch);
        for (size_t p = 0; p < channels_.size(); ++p)
            if (channels_[p] == Channel::held || channels_[p] == Channel::held_early) released.push_back(p);
        end();
        return released;
    }
    // Not running here (a PREPARE this VMM refused, say): later markers of
    // it are stale, within reason. Ours, if any, goes on.
    const uint64_t known = std::max(last_ended_, last_begun_);
    if (epoch > last_ended_ && (epoch <= known || epoch - known <= kMaxEpochStep)) last_ended_ = epoch;
    return released;
}

}  // namespace vvmm::net
