#include "coord/rebuild_exchange.hpp"

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/image_delta.hpp"
#include "vmm/base/json_field.hpp"
#include "ckpt/parity_rebuild.hpp"
#include "ckpt/parity_store.hpp"
#include "ckpt/protected_image.hpp"
#include "coord/parity_roles.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/time_text.hpp"

namespace vvmm::coord {
namespace {

using Clock = std::chrono::steady_clock;
using net::MessageType;
using nlohmann::json;
using Chunks = std::function<Result<void>(uint64_t, std::span<const uint8_t>)>;

const EpochVm* entry_of(const ClusterManifest& epoch, const std::string& vm)
{
    for (const auto& v : epoch.vms)
        if (v.name == vm) return &v;
    return nullptr;
}

// A surviving member's image, checked against the epoch's record as it goes.
Result<uint64_t> send_image(const RebuildContext& ctx, const std::string& vm, const std::string& node_root,
                            const Chunks& send)
{
    const EpochVm* entry = entry_of(ctx.epoch, vm);
    if (!entry) return Error("the epoch has no checkpoint of " + vm);
    TRY_ASSIGN(auto image, ckpt::ProtectedImage::open(vm_checkpoint_root(node_root, vm) + "/" + entry->id,
                                                      ckpt::SealPolicy{ctx.key, false}));
    TRY(ckpt::image_delta(image, nullptr, net::kMaxParityData, send));
    if (image.length() != entry->image_bytes || ckpt::digest_of_hashes(image.memory_hashes()) != entry->memory_hashes_xxh3)
        return Error(vm + "'s image is not the one epoch " + std::to_string(ctx.epoch.epoch) + " recorded");
    return image.length();
}

// A parity block of the epoch, every chunk checked against its record.
Result<uint64_t> send_block(const RebuildContext& ctx, const SetRebuild& r, unsigned index, const std::string& node_root,
                            const Chunks& send)
{
    const auto recorded = std::find_if(ctx.epoch.parity.begin(), ctx.epoch.parity.end(),
                                       [&](const EpochParityBlock& b) { return b.set == r.set && b.index == index; });
    if (recorded == ctx.epoch.parity.end()) return Error("the epoch records no such parity block");
    TRY_ASSIGN(auto codec, parity_codec_for(ctx.original, r.members));
    ckpt::ParityBlockStore store(parity_block_dir(node_root, r.set, index), codec, index, ctx.key,
                                 longest_image_of_set(ctx.original, r.set));
    TRY_ASSIGN(auto record, store.record(ctx.epoch.epoch));
    if (ckpt::digest_of_hashes(record.chunk_xxh3) != recorded->record_xxh3 || record.length != recorded->length)
        return Error("the block's record is not the one the epoch recorded");
    for (uint64_t c = 0; c * ckpt::kChunkSize < record.length; ++c) {
        TRY_ASSIGN(const auto chunk, store.read_chunk(record, c));
        for (size_t at = 0; at < chunk.size(); at += net::kMaxParityData) {
            const size_t len = std::min(net::kMaxParityData, chunk.size() - at);
            const std::span<const uint8_t> run(chunk.data() + at, len);
            if (std::any_of(run.begin(), run.end(), [](uint8_t b) { return b != 0; }))
                TRY(send(c * ckpt::kChunkSize + at, run));
        }
    }
    return record.length;
}

Result<void> wait_connected(net::PeerMesh& mesh, const std::string& peer, Clock::time_point deadline)
{
    while (Clock::now() < deadline) {
        const auto ids = mesh.connected_peer_ids();
        if (std::find(ids.begin(), ids.end(), peer) != ids.end()) return ok();
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return Error(peer + " (being rebuilt) did not connect in time");
}

}  // namespace

Result<void> send_rebuild_sources(const RebuildContext& ctx, const std::string& vm, const std::string& node_root,
                                  net::PeerMesh& mesh, Clock::time_point deadline)
{
    for (const auto& r : ctx.plan)
        for (const auto& source : r.sources) {
            if (source.vm != vm) continue;
            const unsigned code = source_code(r, source);
            // Read once, sent to every rebuilder of the set (two with rs:2 and two lost).
            const uint64_t epoch = ctx.epoch.epoch;
            for (const auto& target : r.lost_vms) {
                TRY(wait_connected(mesh, target, deadline));
                mesh.send_control(target, MessageType::parity_begin, epoch, {{"set", r.set}, {"member", code}, {"rebuild", true}});
            }
            const Chunks send = [&](uint64_t offset, std::span<const uint8_t> bytes) -> Result<void> {
                const net::ParityMessage m{epoch, r.set, static_cast<uint16_t>(code), offset, {bytes.begin(), bytes.end()}};
                for (const auto& target : r.lost_vms) TRY(mesh.send_parity(target, m, deadline));
                return ok();
            };
            auto sent = source.parity ? send_block(ctx, r, source.index, node_root, send) : send_image(ctx, vm, node_root, send);
            json end = {{"set", r.set}, {"member", code}};
            if (sent) end["length"] = sent.value();
            else end["error"] = vm + ": " + sent.error().message();
            for (const auto& target : r.lost_vms) mesh.send_control(target, MessageType::parity_end, epoch, end);
            if (!sent) return sent.error().context("rebuilding " + r.lost_vms.front());
            log_info("restore: sent " + std::string(source.parity ? "parity block " : "the image of ") +
                     (source.parity ? std::to_string(source.index) : vm) + " to rebuild parity set " + std::to_string(r.set));
        }
    return ok();
}

namespace {

// The rebuilder's handler: folds what each expected source sends.
class RebuildReceiver final : public net::PeerMessageSink, public net::ControllerRequestHandler {
public:
    RebuildReceiver(const SetRebuild& r, ckpt::ParityRebuild& rebuild, uint64_t epoch)
        : r_(r), rebuild_(rebuild), epoch_(epoch), begun_(r.sources.size(), false), ended_(r.sources.size(), false)
    {
    }

    void on_control(const std::string& peer, MessageType type, uint64_t epoch, const json& body) override
    {
        if (type != MessageType::parity_begin && type != MessageType::parity_end) return;
        std::lock_guard lock(mutex_);
        const auto i = source_index(peer, epoch, vvmm::field_or<uint32_t>(body, "set", UINT32_MAX),
                                    vvmm::field_or<unsigned>(body, "member", UINT32_MAX));
        if (!i) return;
        if (type == MessageType::parity_begin) {
            begun_[*i] = true;
            return;
        }
        if (body.contains("error")) return fail(vvmm::field_or<std::string>(body, "error", peer + " failed"));
        if (!begun_[*i]) return fail(peer + " ended what it never began");
        ended_[*i] = true;
        cv_.notify_all();
    }

    void on_parity(const std::string& peer, const net::ParityMessage& m) override
    {
        std::lock_guard lock(mutex_);
        const auto i = source_index(peer, m.epoch, m.set, m.member);
        if (!i || !error_.empty()) return;
        if (!begun_[*i] || ended_[*i]) return fail(peer + " sent rebuild data outside its BEGIN and END");
        const RebuildSource& s = r_.sources[*i];
        auto added = s.parity ? rebuild_.add_parity(s.index, m.offset, m.data) : rebuild_.add_member(s.index, m.offset, m.data);
        if (!added) fail(added.error().message());
    }

    void on_peer_lost(const std::string& peer) override
    {
        std::lock_guard lock(mutex_);
        for (size_t i = 0; i < r_.sources.size(); ++i)
            if (r_.sources[i].vm == peer && begun_[i] && !ended_[i]) fail("lost " + peer + " before it sent everything");
    }

    void on_request(const json&, std::function<void(json)> reply) override
    {
        reply({{"ok", false}, {"error", "this VM is being rebuilt from parity"}});
    }

    Result<void> wait(Clock::time_point deadline)
    {
        std::unique_lock lock(mutex_);
        auto next_report = Clock::now() + std::chrono::seconds(10);
        for (;;) {
            if (!error_.empty()) return Error(error_);
            if (std::all_of(ended_.begin(), ended_.end(), [](bool e) { return e; })) return ok();
            if (Clock::now() >= deadline) return Error("waiting for " + missing() + " timed out");
            if (Clock::now() >= next_report) {
                log_warn("restore: rebuilding, still waiting for " + missing());
                next_report += std::chrono::seconds(10);
            }
            cv_.wait_for(lock, std::chrono::milliseconds(200));
        }
    }

private:
    // The source `peer` is, if it sent for this rebuild as itself.
    std::optional<size_t> source_index(const std::string& peer, uint64_t epoch, uint32_t set, unsigned code)
    {
        if (epoch != epoch_ || set != r_.set) return std::nullopt;
        for (size_t i = 0; i < r_.sources.size(); ++i)
            if (r_.sources[i].vm == peer && source_code(r_, r_.sources[i]) == code) return i;
        log_.warn("restore: rebuild data from " + peer + " that is not one of its sources dropped");
        return std::nullopt;
    }
    void fail(const std::string& why)
    {
        if (error_.empty()) error_ = why;
        cv_.notify_all();
    }
    std::string missing() const
    {
        std::string out;
        for (size_t i = 0; i < r_.sources.size(); ++i)
            if (!ended_[i]) out += (out.empty() ? "" : ", ") + r_.sources[i].vm;
        return out;
    }

    const SetRebuild& r_;
    ckpt::ParityRebuild& rebuild_;
    const uint64_t epoch_;
    RateLimitedLog log_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::vector<bool> begun_, ended_;
    std::string error_;
};

// Every guest of the cluster, and its devices, stay paused until the
// rebuilt VM has restored (the barrier): no frame can be on its way. One
// that comes anyway is refused and said, not taken in silence; the mesh
// then stops reading that peer, and the rebuild fails rather than lose it.
class NoGuestYet final : public net::FrameSink {
public:
    bool deliver_to_guest(std::span<const uint8_t>) override
    {
        log_.warn("restore: a frame for the VM being rebuilt arrived before it runs; it waits");
        return false;
    }
    void transmit_ready() override {}

private:
    RateLimitedLog log_;
};

Result<void> receive(const RebuildContext& ctx, const ClusterConfig& config, const std::string& vm,
                     const std::vector<uint8_t>& secret, const SetRebuild& r, ckpt::ParityRebuild& rebuild,
                     Clock::time_point deadline)
{
    const VmEntry& v = *config.vm(vm);
    TRY_ASSIGN(auto spec, net::peer_net_spec(config.nic(v)));
    TRY_ASSIGN(auto mesh, net::PeerMesh::create(spec, {}, {config.name, secret, config.peer_names(v)}));
    RebuildReceiver receiver(r, rebuild, ctx.epoch.epoch);
    NoGuestYet sink;
    mesh->attach(&sink);
    mesh->set_message_sink(&receiver);
    mesh->set_request_handler(&receiver);
    TRY(mesh->start());
    auto received = receiver.wait(deadline);
    mesh->stop();
    return received;
}

}  // namespace

Result<std::string> rebuild_lost_vm(const RebuildContext& ctx, const ClusterConfig& config, const std::string& vm,
                                    const std::vector<uint8_t>& secret, std::chrono::seconds timeout)
{
    const auto r = std::find_if(ctx.plan.begin(), ctx.plan.end(), [&](const SetRebuild& s) {
        return std::find(s.lost_vms.begin(), s.lost_vms.end(), vm) != s.lost_vms.end();
    });
    const EpochVm* entry = entry_of(ctx.epoch, vm);
    if (r == ctx.plan.end() || !entry || !config.vm(vm)) return Error(vm + " is not to be rebuilt");
    const size_t n = static_cast<size_t>(std::find(r->lost_vms.begin(), r->lost_vms.end(), vm) - r->lost_vms.begin());
    const auto start = Clock::now();
    const std::string node_root = config.node_checkpoint_dir(config.vm(vm)->node).string();
    const std::string work = node_root + "/.rebuild-" + vm;
    // The residuals are unnamed files: the directory is all that can remain.
    struct RemoveDir {
        std::string dir;
        ~RemoveDir()
        {
            std::error_code ec;
            std::filesystem::remove_all(dir, ec);
        }
    } remove_work{work};
    TRY_ASSIGN(auto codec, parity_codec_for(ctx.original, r->members));
    TRY_ASSIGN(auto rebuild, ckpt::ParityRebuild::create(codec, r->lost, r->parity_used, work,
                                                                  longest_image_of_set(ctx.original, r->set)));
    TRY(receive(ctx, config, vm, secret, *r, rebuild, start + timeout));
    const ckpt::RebuildTarget target{entry->id, entry->memory_bytes, entry->image_bytes, entry->memory_hashes_xxh3,
                                     entry->manifest_xxh3};
    TRY_ASSIGN(const uint64_t digest,
               ckpt::write_rebuilt_checkpoint(vm_checkpoint_root(node_root, vm), target,
                                              [&](uint64_t c) -> Result<std::vector<uint8_t>> {
                                                  TRY_ASSIGN(auto chunks, rebuild.solve_chunk(c));
                                                  return std::move(chunks[n]);
                                              },
                                              ctx.key));
    ClusterManifest recorded = ctx.epoch;
    for (auto& e : recorded.vms)
        if (e.name == vm) {
            e.manifest_xxh3 = digest;
            e.node = config.vm(vm)->node;
        }
    TRY(write_cluster_manifest(node_root, recorded, ctx.key));
    log_warn("restore: " + vm + "'s checkpoint of epoch " + std::to_string(ctx.epoch.epoch) + " rebuilt from parity in " +
             std::to_string(static_cast<long>(ms_since(start))) + " ms");
    return vm_checkpoint_root(node_root, vm) + "/" + entry->id;
}

}  // namespace vvmm::coord
