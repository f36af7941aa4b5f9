#include "net/channel_cut.hpp"

#include <algorithm>

namespace vvmm::net {

Result<void> ChannelCut::begin(uint64_t epoch)
{
    if (epoch_ && *epoch_ == epoch) return ok();  // PREPARE after our own start, or twice
    if (epoch_) return Error("epoch " + std::to_string(*epoch_) + " is still running");
    if (epoch <= last_ended_)
        return Error("epoch " + std::to_string(epoch) + " is not newer than epoch " + std::to_string(last_ended_));
    epoch_ = epoch;
    captured_ = false;
    channels_.assign(peers_, Channel::open);
    recorded_.assign(peers_, {});
    reset_recording_bounds();
    return ok();
}

ChannelCut::MarkerAction ChannelCut::on_marker(size_t peer, uint64_t epoch)
{
    if (peer >= peers_) return MarkerAction::ignore;
    if (!epoch_ && epoch > last_ended_) (void)begin(epoch);
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
    if (epoch_) last_ended_ = std::max(last_ended_, *epoch_);
    epoch_.reset();
    captured_ = false;
    channels_.clear();
    recorded_.clear();
    reset_recording_bounds();
    return out;
}

std::vector<size_t> ChannelCut::abort(uint64_t epoch)
{
    std::vector<size_t> released;
    last_ended_ = std::max(last_ended_, epoch);
    if (epoch_ && *epoch_ != epoch) return released;  // not ours: ours goes on
    for (size_t p = 0; p < channels_.size(); ++p)
        if (channels_[p] == Channel::held) released.push_back(p);
    epoch_.reset();
    captured_ = false;
    channels_.clear();
    recorded_.clear();
    reset_recording_bounds();
    return released;
}

}  // namespace vvmm::net
