#include "coord/epoch_initiator.hpp"

#include <algorithm>

#include "ckpt/json_field.hpp"

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
    if (!ckpt::field_or(body, "ok", false)) return abort(vm + ": " + ckpt::field_or<std::string>(body, "error", "failed"));
    // The body is the peer's description of its checkpoint: parse it as a
    // cluster manifest entry, with the same checks.
    nlohmann::json entry = body;
    entry["name"] = vm;
    auto parsed = cluster_manifest_from_json({{"format", "vvmm-cluster-epoch"}, {"format_version", 1},
                                              {"cluster", ""}, {"epoch", epoch_}, {"mode", ""},
                                              {"incremental", false}, {"created", ""}, {"epoch_ms", 0},
                                              {"vms", nlohmann::json::array({entry})}});
    if (!parsed) return abort(vm + " sent a malformed DONE: " + parsed.error().message());
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

}  // namespace vvmm::coord
