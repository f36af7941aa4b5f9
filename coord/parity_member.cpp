#include "coord/parity_member.hpp"

#include <algorithm>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/image_delta.hpp"
#include "vmm/base/json_field.hpp"
#include "ckpt/protected_image.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::coord {
namespace {

using net::MessageType;
using nlohmann::json;

// Keeps `epoch` and the newest one before it.
void keep_two(std::vector<uint64_t>& epochs, uint64_t epoch)
{
    epochs.push_back(epoch);
    std::sort(epochs.begin(), epochs.end());
    epochs.erase(std::unique(epochs.begin(), epochs.end()), epochs.end());
    while (epochs.size() > 2) epochs.erase(epochs.begin());
}

}  // namespace

ParityMember::ParityMember(const ClusterConfig& config, std::string vm, std::string node_root, net::PeerMesh& mesh,
                           ckpt::SealKey key)
    : config_(config), vm_(std::move(vm)), node_root_(std::move(node_root)), mesh_(mesh), key_(std::move(key)),
      membership_(parity_membership(config_, vm_))
{
    for (auto& block : held_parity_blocks(config_, vm_)) {
        auto codec = parity_codec_for(config_, static_cast<unsigned>(block.members.size()));
        if (!codec) {  // the placement was checked when the file was read
            log_error("parity set " + std::to_string(block.set) + ": " + codec.error().message());
            continue;
        }
        Held h;
        h.codec = std::make_unique<ckpt::ParityCodec>(std::move(codec.value()));
        h.store = std::make_unique<ckpt::ParityBlockStore>(parity_block_dir(node_root_, block.set, block.parity_index),
                                                           *h.codec, block.parity_index, key_,
                                                           longest_image_of(config_, block.members));
        h.block = std::move(block);
        held_.emplace(h.block.set, std::move(h));
    }
}

// ---- member ---------------------------------------------------------------------

void ParityMember::send_to_holders(MessageType type, uint64_t epoch, const json& body)
{
    for (const auto& h : membership_->holders) mesh_.send_control(h, type, epoch, body);
}

Result<MemberParity> ParityMember::send_changes(uint64_t epoch, uint64_t base, const std::string& checkpoint_dir,
                                                Clock::time_point deadline)
{
    if (!membership_) return MemberParity{};
    const ckpt::SealPolicy policy{key_, false};
    TRY_ASSIGN(auto current, ckpt::ProtectedImage::open(checkpoint_dir, policy));
    std::optional<ckpt::ProtectedImage> before;
    if (base != 0) {
        std::optional<Base> known;
        {
            std::lock_guard lock(mutex_);
            if (auto it = bases_.find(base); it != bases_.end()) known = it->second;
        }
        if (!known) return Error("parity: this VMM has no image of base epoch " + std::to_string(base));
        TRY_ASSIGN(before, ckpt::ProtectedImage::open(known->checkpoint_dir, policy));
        TRY(before->set_memory_hashes(std::move(known->memory_hashes)));
    }
    const ParityMembership& m = *membership_;
    send_to_holders(MessageType::parity_begin, epoch, {{"set", m.set}, {"member", m.member}, {"base", base}});
    auto sent = ckpt::image_delta(current, before ? &*before : nullptr, net::kMaxParityData,
                                  [&](uint64_t offset, std::span<const uint8_t> delta) -> Result<void> {
                                      const net::ParityMessage message{epoch, m.set, m.member, offset,
                                                                       {delta.begin(), delta.end()}};
                                      for (const auto& h : m.holders) TRY(mesh_.send_parity(h, message, deadline));
                                      return ok();
                                  });
    if (!sent) return sent.error().context("parity");
    send_to_holders(MessageType::parity_end, epoch, {{"set", m.set}, {"member", m.member}, {"length", current.length()}});
    MemberParity out{current.length(), current.memory_bytes(), ckpt::digest_of_hashes(current.memory_hashes()),
                     sent->bytes_sent};
    std::lock_guard lock(mutex_);
    bases_[epoch] = Base{checkpoint_dir, current.memory_hashes()};
    return out;
}

// ---- holder ---------------------------------------------------------------------

ParityMember::Held* ParityMember::held_for(const std::string& peer, uint32_t set, unsigned member, uint64_t epoch,
                                           const char* what)
{
    auto it = held_.find(set);
    // Only a set's own member may change its part of the set's parity.
    if (it == held_.end() || member >= it->second.block.members.size() || it->second.block.members[member] != peer) {
        log_.warn(std::string(what) + " of epoch " + std::to_string(epoch) + " from " + peer + " for parity set " +
                 std::to_string(set) + " member " + std::to_string(member) + " dropped: not a block this VMM keeps for it");
        return nullptr;
    }
    return &it->second;
}

void ParityMember::fail(Held& h, const std::string& why)
{
    if (!h.error.empty()) return;
    h.error = "parity set " + std::to_string(h.block.set) + " block " + std::to_string(h.block.parity_index) +
              " of epoch " + std::to_string(h.epoch) + ": " + why;
    log_warn(h.error);
    h.store->abort();
    cv_.notify_all();
}

void ParityMember::on_begin(const std::string& peer, uint64_t epoch, const json& body)
{
    auto set = vvmm::field<uint32_t>(body, "set");
    auto member = vvmm::field<unsigned>(body, "member");
    auto base = vvmm::field<uint64_t>(body, "base");
    if (!set || !member || !base) return log_.warn("a malformed PARITY_BEGIN from " + peer + " dropped");
    std::lock_guard lock(mutex_);
    Held* h = held_for(peer, *set, *member, epoch, "PARITY_BEGIN");
    if (!h) return;
    if (epoch < h->epoch || (!h->committed.empty() && epoch <= h->committed.back())) return;  // stale
    if (epoch > h->epoch) {
        h->epoch = epoch;
        h->base = *base;
        h->begun.assign(h->block.members.size(), false);
        h->ended.assign(h->block.members.size(), false);
        h->finished.reset();
        h->error.clear();
        const bool known = *base == 0 || std::find(h->committed.begin(), h->committed.end(), *base) != h->committed.end();
        if (!known) return fail(*h, "base epoch " + std::to_string(*base) + " is not a committed block here");
        if (auto r = h->store->begin(epoch, *base ? std::optional<uint64_t>(*base) : std::nullopt); !r)
            return fail(*h, r.error().message());
    }
    if (*base != h->base) return fail(*h, peer + " sent changes against epoch " + std::to_string(*base) + ", others against " + std::to_string(h->base));
    h->begun[*member] = true;
}

void ParityMember::on_parity(const std::string& peer, const net::ParityMessage& message)
{
    std::lock_guard lock(mutex_);
    Held* h = held_for(peer, message.set, message.member, message.epoch, "PARITY");
    if (!h || message.epoch != h->epoch || !h->error.empty()) return;
    if (!h->begun[message.member] || h->ended[message.member])
        return fail(*h, "PARITY from " + peer + " outside its BEGIN and END");
    if (auto r = h->store->apply(message.member, message.offset, message.data); !r) fail(*h, r.error().message());
}

void ParityMember::on_end(const std::string& peer, uint64_t epoch, const json& body)
{
    auto set = vvmm::field<uint32_t>(body, "set");
    auto member = vvmm::field<unsigned>(body, "member");
    if (!set || !member) return log_.warn("a malformed PARITY_END from " + peer + " dropped");
    std::lock_guard lock(mutex_);
    Held* h = held_for(peer, *set, *member, epoch, "PARITY_END");
    if (!h || epoch != h->epoch || !h->error.empty()) return;
    if (!h->begun[*member]) return fail(*h, "PARITY_END from " + peer + " without its BEGIN");
    h->ended[*member] = true;
    finish_if_complete(*h);
}

void ParityMember::finish_if_complete(Held& h)
{
    if (std::find(h.ended.begin(), h.ended.end(), false) != h.ended.end()) return;
    auto record = h.store->finish();
    if (!record) return fail(h, record.error().message());
    h.finished = EpochParityBlock{h.block.set, h.block.parity_index, vm_, record->length,
                                  ckpt::digest_of_hashes(record->chunk_xxh3)};
    cv_.notify_all();
}

void ParityMember::on_peer_lost(const std::string& peer)
{
    std::lock_guard lock(mutex_);
    for (auto& [set, h] : held_) {
        if (h.epoch == 0 || h.finished || !h.error.empty()) continue;
        for (size_t i = 0; i < h.block.members.size(); ++i)
            if (h.block.members[i] == peer && !h.ended[i]) fail(h, "lost " + peer + " before it sent all its changes");
    }
}

Result<std::vector<EpochParityBlock>> ParityMember::wait_held(uint64_t epoch, Clock::time_point deadline)
{
    std::unique_lock lock(mutex_);
    auto settled = [&] {
        if (newest_aborted_ >= epoch) return true;
        for (const auto& [set, h] : held_)
            if (h.epoch < epoch || (h.epoch == epoch && !h.finished && h.error.empty())) return false;
        return true;
    };
    if (!cv_.wait_until(lock, deadline, settled)) {
        std::string missing;
        for (const auto& [set, h] : held_)
            if (h.epoch != epoch || !h.finished) missing += (missing.empty() ? "" : ", ") + std::to_string(set);
        return Error("parity: the changes of every member did not reach this VMM in time (set " + missing + ")");
    }
    if (newest_aborted_ >= epoch) return Error("parity: epoch " + std::to_string(epoch) + " was aborted");
    std::vector<EpochParityBlock> out;
    for (const auto& [set, h] : held_) {
        if (h.epoch != epoch) return Error("parity set " + std::to_string(set) + ": epoch " + std::to_string(epoch) + " was overtaken");
        if (!h.error.empty()) return Error(h.error);
        out.push_back(*h.finished);
    }
    return out;
}

// ---- outcomes -------------------------------------------------------------------

void ParityMember::committed(uint64_t epoch)
{
    std::lock_guard lock(mutex_);
    if (bases_.count(epoch)) {
        keep_two(committed_, epoch);
        std::erase_if(bases_, [&](const auto& b) {
            return std::find(committed_.begin(), committed_.end(), b.first) == committed_.end();
        });
    }
    for (auto& [set, h] : held_) {
        if (h.epoch != epoch || !h.finished) continue;
        keep_two(h.committed, epoch);
        h.store->keep_only(h.committed);
    }
}

void ParityMember::aborted(uint64_t epoch)
{
    std::lock_guard lock(mutex_);
    bases_.erase(epoch);
    newest_aborted_ = std::max(newest_aborted_, epoch);
    for (auto& [set, h] : held_) {
        if (h.epoch != epoch) continue;
        if (!h.finished && h.error.empty()) h.error = "epoch " + std::to_string(epoch) + " was aborted";
        h.store->abort();
        h.store->keep_only(h.committed);
    }
    cv_.notify_all();
}

}  // namespace vvmm::coord
