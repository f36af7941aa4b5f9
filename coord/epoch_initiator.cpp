#include "coord/epoch_initiator.hpp"

#include <algorithm>
#include <limits>

#include "vmm/base/json_field.hpp"
#include "net/channel_cut.hpp"

namespace vvmm::coord {

EpochInitiator::Outcome EpochInitiator::abort(std::string reason)
{
    if (outcome_ != Outcome::pending) return outcome_;
    outcome_ = Outcome::abort;
    reason_ = std::move(reason);
    return outcome_;
}

EpochInitiator::Outcome EpochInitiator::on_done(const std::string& vm, const nlohmann::json& body)
{
    if (outcome_ != Outcome::pending) return outcome_;
    if (std::find(vms_.begin(), vms_.end(), vm) == vms_.end() || done_.count(vm)) return outcome_;  // stray: ignore
    if (!vvmm::field_or(body, "ok", false)) return abort(vm + ": " + vvmm::field_or<std::string>(body, "error", "failed"));
    // The body is the peer's description of its checkpoint: parse it as a
    // cluster manifest entry, with the same checks.
    nlohmann::json entry = body;
    entry["name"] = vm;
    auto parsed = cluster_manifest_from_json({{"format", "vvmm-cluster-epoch"}, {"format_version", 1},
                                              {"cluster", ""}, {"epoch", epoch_}, {"mode", ""},
                                              {"incremental", false}, {"created", ""}, {"epoch_ms", 0},
                                              {"vms", nlohmann::json::array({entry})}});
    if (!parsed) return abort(vm + " sent a malformed DONE: " + parsed.error().message());
    if (body.contains("parity")) {
        if (!body.at("parity").is_array()) return abort(vm + " sent a malformed DONE: 'parity' is not a list");
        for (const auto& b : body.at("parity")) {
            auto block = parity_block_from_json(b);
            if (!block || block->holder != vm)
                return abort(vm + " sent a malformed DONE: a bad parity block" + (block ? "" : ": " + block.error().message()));
            parity_.push_back(std::move(block.value()));
        }
    }
    done_[vm] = parsed->vms[0];
    if (done_.size() < vms_.size()) return outcome_;
    for (const auto& name : vms_) ordered_.push_back(done_.at(name));
    outcome_ = Outcome::commit;
    return outcome_;
}

EpochInitiator::Outcome EpochInitiator::on_vm_lost(const std::string& vm)
{
    // A VM that already answered has its checkpoint on disk: losing it now
    // does not make the epoch inconsistent.
    if (done_.count(vm)) return outcome_;
    return abort("lost the connection to " + vm + " during the epoch");
}

EpochInitiator::Outcome EpochInitiator::on_deadline()
{
    std::string waiting;
    for (const auto& v : waiting_for()) waiting += (waiting.empty() ? "" : ", ") + v;
    return abort("timed out waiting for " + waiting);
}

std::vector<std::string> EpochInitiator::waiting_for() const
{
    std::vector<std::string> out;
    for (const auto& v : vms_)
        if (!done_.count(v)) out.push_back(v);
    return out;
}

Result<uint64_t> EpochAuthority::next_epoch() const
{
    if (last_ == std::numeric_limits<uint64_t>::max())
        return Error("epoch numbers are exhausted (the newest known epoch is " + std::to_string(last_) + ")");
    return last_ + 1;
}

void EpochAuthority::started(uint64_t epoch)
{
    last_ = std::max(last_, epoch);
    running_ = epoch;
    remember(epoch, self_);
}

Result<void> EpochAuthority::on_prepare(const std::string& peer, uint64_t epoch)
{
    if (epoch <= last_) return Error("has seen epoch " + std::to_string(last_) + " already");
    if (epoch - last_ > net::kMaxEpochStep)
        return Error("will not jump from epoch " + std::to_string(last_) + " to " + std::to_string(epoch) +
                     " (at most " + std::to_string(net::kMaxEpochStep) + " ahead)");
    last_ = epoch;
    remember(epoch, peer);
    return ok();
}

Result<void> EpochAuthority::on_decision(const std::string& peer, uint64_t epoch)
{
    auto it = std::find_if(recent_.begin(), recent_.end(), [&](const Prepared& p) { return p.epoch == epoch; });
    if (it == recent_.end()) return Error("no PREPARE of that epoch came here");
    if (it->initiator == self_) return Error("this VMM initiated it");
    if (it->initiator != peer) return Error("its initiator is " + it->initiator);
    if (it->decided) return Error("it was decided already");
    it->decided = true;
    return ok();
}

void EpochAuthority::restored(uint64_t epoch)
{
    last_ = std::max(last_, epoch);
}

void EpochAuthority::remember(uint64_t epoch, const std::string& initiator)
{
    recent_.push_back({epoch, initiator});
    if (recent_.size() <= kRemembered) return;
    // The oldest goes, unless it is the running epoch: then the next one.
    auto victim = recent_.begin();
    if (victim->epoch == running_) ++victim;
    recent_.erase(victim);
}

}  // namespace vvmm::coord
