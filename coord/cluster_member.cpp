#include "coord/cluster_member.hpp"

#include <linux/magic.h>
#include <sys/vfs.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "ckpt/checkpoint_retention.hpp"
#include "vmm/base/json_field.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/lost_nodes.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/time_text.hpp"

namespace vvmm::coord {
namespace {

using net::MessageType;
using nlohmann::json;

json failure(const std::string& message) { return {{"ok", false}, {"error", message}}; }

// The network cut of one epoch, taken by the peer mesh for the checkpointer.
class MeshEpochCut final : public ckpt::EpochCut {
public:
    MeshEpochCut(net::PeerMesh& mesh, uint64_t epoch, std::chrono::steady_clock::time_point deadline)
        : mesh_(mesh), epoch_(epoch), deadline_(deadline)
    {
    }
    uint64_t epoch() const override { return epoch_; }
    void hold_delivery() override { mesh_.hold_delivery(); }
    void cut() override { mesh_.cut(epoch_); }
    void release() override { mesh_.release_delivery(); }
    Result<std::vector<uint8_t>> channel_state() override
    {
        TRY_ASSIGN(auto state, mesh_.wait_channel_state(epoch_, deadline_));
        return net::encode_channel_state(state);
    }

private:
    net::PeerMesh& mesh_;
    uint64_t epoch_;
    std::chrono::steady_clock::time_point deadline_;
};

// storage = memory on a directory that is not a tmpfs puts the "memory"
// checkpoints on whatever file system that is: worth a warning, not a refusal
// (a RAM-backed block device is as good).
void warn_unless_tmpfs(const std::string& dir)
{
    std::filesystem::path at(dir);
    std::error_code ec;
    while (!at.empty() && at != at.root_path() && !std::filesystem::exists(at, ec)) at = at.parent_path();
    struct statfs fs {};
    if (::statfs(at.c_str(), &fs) == 0 && fs.f_type != TMPFS_MAGIC)
        log_warn("storage = \"memory\": " + dir + " is not on a tmpfs, so its checkpoints are not in memory");
}

// The id of `vm`'s checkpoint in committed epoch `epoch`.
Result<std::string> checkpoint_of(const std::string& node_root, uint64_t epoch, const std::string& vm,
                                  const ckpt::SealPolicy& policy)
{
    TRY_ASSIGN(auto m, read_cluster_manifest(node_root, epoch, policy));
    for (const auto& v : m.vms)
        if (v.name == vm) return v.id;
    return Error("epoch " + std::to_string(epoch) + " has no checkpoint of " + vm);
}

uint64_t newest_committed(const std::string& node_root)
{
    const auto epochs = committed_epochs(node_root);
    return epochs.empty() ? 0 : epochs.back();
}

}  // namespace

ClusterMember::ClusterMember(const ClusterConfig& config, std::string vm, net::PeerMesh& mesh,
                             ckpt::Checkpointer& checkpointer, ckpt::SealKey seal_key, std::function<json()> status,
                             uint64_t restore_epoch)
    : config_(config), vm_(std::move(vm)), node_(config.vm(vm_) ? config.vm(vm_)->node : ""),
      node_root_(config.node_checkpoint_dir(node_).string()), vm_root_(vm_checkpoint_root(node_root_, vm_)),
      mesh_(mesh), checkpointer_(checkpointer), seal_key_(std::move(seal_key)), status_(std::move(status)),
      authority_(vm_, newest_committed(node_root_)), restore_epoch_(restore_epoch)
{
    mesh_.set_message_sink(this);
    mesh_.set_request_handler(this);
    last_epoch_end_ = Clock::now();
    epoch_costs_ = recent_epoch_costs(node_root_, ckpt::SealPolicy{seal_key_, false});
    if (config_.storage == CheckpointStorage::memory) warn_unless_tmpfs(node_root_);
    if (config_.storage == CheckpointStorage::memory && config_.parity)
        parity_ = std::make_unique<ParityMember>(config_, vm_, node_root_, mesh_, seal_key_);
    if (config_.schedule.kind != EpochSchedule::Kind::on_request)
        schedule_thread_ = std::thread([this] { schedule_worker(); });
}

ClusterMember::~ClusterMember()
{
    {
        std::lock_guard lock(list_mutex_);
        list_quit_ = true;
    }
    list_cv_.notify_all();
    if (list_thread_.joinable()) list_thread_.join();
    std::optional<uint64_t> running;
    {
        std::lock_guard lock(mutex_);
        quit_ = true;
        if (epoch_) running = epoch_->number;
    }
    // A waiting checkpoint gives up (outside mutex_: see abort_cut).
    if (running) mesh_.abort_epoch(*running);
    cv_.notify_all();
    if (schedule_thread_.joinable()) schedule_thread_.join();
    if (epoch_thread_.joinable()) epoch_thread_.join();
    // After the epoch thread, the only one that starts copies.
    {
        std::lock_guard lock(persist_mutex_);
        persist_quit_ = true;
    }
    persist_cv_.notify_all();
    if (persist_thread_.joinable()) persist_thread_.join();
}

std::vector<std::string> ClusterMember::peers() const
{
    std::vector<std::string> out;
    for (const auto& v : config_.vms)
        if (v.name != vm_) out.push_back(v.name);
    return out;
}

// ---- requests from controllers -----------------------------------------------

void ClusterMember::on_request(const json& message, std::function<void(json)> reply)
{
    auto request = parse_cluster_request(message);
    if (!request) {
        reply(failure(request.error().message()));
        return;
    }
    switch (request->cmd) {
    case ClusterCommand::status: {
        json s = status_();
        s["vm"] = vm_;
        s["node"] = node_;
        reply(s);
        return;
    }
    case ClusterCommand::list: {
        std::lock_guard lock(list_mutex_);
        if (!list_thread_.joinable()) list_thread_ = std::thread([this] { list_worker(); });
        list_replies_.push_back(std::move(reply));
        list_cv_.notify_one();
        return;
    }
    case ClusterCommand::checkpoint:
        start_epoch(request.value(), std::move(reply));
        return;
    }
}

void ClusterMember::list_worker()
{
    std::unique_lock lock(list_mutex_);
    for (;;) {
        list_cv_.wait(lock, [&] { return list_quit_ || !list_replies_.empty(); });
        if (list_quit_) return;
        auto reply = std::move(list_replies_.front());
        list_replies_.pop_front();
        lock.unlock();
        reply(list());
        lock.lock();
    }
}

json ClusterMember::list() const
{
    // The reply must fit one message (kMaxJsonSize), with room for the rest.
    const RecentEpochs recent = recent_epochs(node_root_, net::kMaxJsonSize * 3 / 4, ckpt::SealPolicy{seal_key_, false});
    json s = status_();
    s["vm"] = vm_;
    s["node"] = node_;
    json schedule;
    {
        std::lock_guard lock(mutex_);
        schedule = schedule_status();
    }
    return {{"ok", true}, {"cluster", config_.name}, {"epochs", recent.epochs}, {"epochs_omitted", recent.omitted},
            {"peers_connected", mesh_.connected_peer_ids()}, {"status", s}, {"schedule", schedule}};
}

// ---- scheduled epochs --------------------------------------------------------------

json ClusterMember::schedule_status() const
{
    const auto interval = epoch_interval(config_, epoch_costs_);
    if (!interval) return {{"interval_s", nullptr}, {"why", "on request only (no interval in the cluster file)"}};
    const double next = interval->interval.count() - Seconds(Clock::now() - last_epoch_end_).count();
    return {{"interval_s", interval->interval.count()},
            {"why", interval->why},
            {"next_in_s", std::max(0.0, next)},
            {"starts_them", starts_scheduled_epochs(config_, vm_, mesh_.connected_peer_ids())}};
}

void ClusterMember::record_epoch_end(const ClusterManifest* committed)
{
    last_epoch_end_ = Clock::now();
    if (!committed) return;
    epoch_costs_.push_back(Seconds(committed->epoch_ms / 1000));
    if (epoch_costs_.size() > kEpochCostWindow) epoch_costs_.erase(epoch_costs_.begin());
}

void ClusterMember::schedule_worker()
{
    // A start that failed (a peer not connected yet, say) is tried again
    // after this, not after a whole interval.
    constexpr auto kRetry = std::chrono::seconds(5);
    std::unique_lock lock(mutex_);
    while (!quit_) {
        cv_.wait_for(lock, std::chrono::seconds(1));
        if (quit_) return;
        if (epoch_ || epoch_thread_busy_ || (restore_epoch_ != 0 && !restore_done_)) continue;
        const auto interval = epoch_interval(config_, epoch_costs_);
        if (!interval || Clock::now() - last_epoch_end_ < interval->interval) continue;
        lock.unlock();
        const bool mine = starts_scheduled_epochs(config_, vm_, mesh_.connected_peer_ids());
        if (mine) {
            ClusterRequest request{ClusterCommand::checkpoint};
            request.incremental = true;  // a full checkpoint when there is no parent yet
            const std::string why = interval->why;
            start_epoch(request, [why](const json& reply) {
                if (!vvmm::field_or(reply, "ok", false))
                    log_warn("scheduled epoch: " + vvmm::field_or<std::string>(reply, "error", "failed"));
            });
        }
        lock.lock();
        if (mine && !epoch_) last_epoch_end_ = Clock::now() - std::chrono::duration_cast<Clock::duration>(interval->interval) + kRetry;
    }
}

void ClusterMember::start_epoch(const ClusterRequest& request, std::function<void(json)> reply)
{
    EpochPrepare prepare{ckpt::CheckpointMode::stop, request.incremental, request.timeout, vm_};
    if (request.mode) {
        prepare.mode = *request.mode;
    } else if (auto mode = ckpt::parse_mode(config_.mode); mode) {
        prepare.mode = mode.value();
    } else {
        reply(failure(mode.error().message()));
        return;
    }
    std::unique_lock lock(mutex_);
    if (epoch_) {
        reply(failure("busy: epoch " + std::to_string(epoch_->number) + " is running"));
        return;
    }
    const auto connected = mesh_.connected_peer_ids();
    std::string missing;
    for (const auto& p : peers())
        if (std::find(connected.begin(), connected.end(), p) == connected.end()) missing += (missing.empty() ? "" : ", ") + p;
    if (!missing.empty()) {
        reply(failure("not every VM is connected to " + vm_ + " (missing: " + missing + "); no epoch was started"));
        return;
    }
    auto next = authority_.next_epoch();
    if (!next) {
        reply(failure(next.error().message()));
        return;
    }
    authority_.started(*next);
    prepare.parity_base = parity_base_;
    Epoch e;
    e.number = *next;
    e.initiator = vm_;
    e.mode = prepare.mode;
    e.incremental = prepare.incremental;
    e.parity_base = prepare.parity_base;
    e.started = Clock::now();
    e.deadline = e.started + prepare.timeout;
    std::vector<std::string> all;
    for (const auto& v : config_.vms) all.push_back(v.name);
    e.tally.emplace(e.number, all);
    e.reply = reply;
    const uint64_t number = e.number;
    // PREPARE goes out before this VMM's own markers (sent at its cut, later).
    mesh_.send_control("", MessageType::prepare, number, to_json(prepare));
    if (auto r = begin(std::move(e)); !r) {
        // The peers got PREPARE: tell them it is off.
        mesh_.send_control("", MessageType::abort, number, {{"reason", r.error().message()}});
        reply(failure(r.error().message()));
        epoch_.reset();
        return;
    }
    log_info("epoch " + std::to_string(number) + ": started by " + vm_ + " (" + ckpt::mode_name(prepare.mode) +
             (prepare.incremental ? ", incremental" : "") + ")");
}

// ---- epoch messages from peers ------------------------------------------------

void ClusterMember::on_control(const std::string& peer, MessageType type, uint64_t epoch, const json& body)
{
    switch (type) {
    case MessageType::prepare: on_prepare(peer, epoch, body); return;
    case MessageType::done: on_done(peer, epoch, body); return;
    case MessageType::commit: on_commit(peer, epoch, body); return;
    case MessageType::abort: on_abort(peer, epoch, vvmm::field_or<std::string>(body, "reason", "no reason given")); return;
    case MessageType::parity_begin:
        if (parity_) parity_->on_begin(peer, epoch, body);
        return;
    case MessageType::parity_end:
        if (parity_) parity_->on_end(peer, epoch, body);
        return;
    case MessageType::restored: {
        std::lock_guard lock(mutex_);
        // Bounded by the peers: only this VM's restore epoch, only until its barrier.
        if (restore_epoch_ != 0 && epoch == restore_epoch_ && !restore_done_)
            restored_.insert(peer + "@" + std::to_string(epoch));
        // Another epoch: the nodes disagree on the newest (one was killed
        // before a COMMIT reached it). Waiting would never end.
        if (restore_epoch_ != 0 && epoch != restore_epoch_ && !restore_done_ && restore_conflict_.empty())
            restore_conflict_ = peer + " restores epoch " + std::to_string(epoch);
        cv_.notify_all();
        return;
    }
    default: return;
    }
}

void ClusterMember::on_prepare(const std::string& peer, uint64_t epoch, const json& body)
{
    auto refuse = [&](const std::string& why) {
        peer_log_.warn("epoch " + std::to_string(epoch) + " from " + peer + " refused: " + why);
        mesh_.send_control(peer, MessageType::done, epoch, failure(vm_ + " " + why));
    };
    auto prepare = parse_epoch_prepare(body);
    if (!prepare) return refuse("got a bad PREPARE: " + prepare.error().message());
    if (prepare->initiator != peer) return refuse("got a PREPARE whose initiator is not its sender");
    std::unique_lock lock(mutex_);
    if (epoch_ && epoch_->number == epoch && epoch_->initiator == peer) return;  // a repeat
    // Before the busy check: a PREPARE refused for being busy is still its
    // epoch's, whose initiator's ABORT then counts.
    if (auto r = authority_.on_prepare(peer, epoch); !r) return refuse(r.error().message());
    if (epoch_) return refuse("is busy with epoch " + std::to_string(epoch_->number));
    Epoch e;
    e.number = epoch;
    e.initiator = peer;
    e.mode = prepare->mode;
    e.incremental = prepare->incremental;
    e.parity_base = prepare->parity_base;
    e.started = Clock::now();
    e.deadline = e.started + prepare->timeout;
    if (auto r = begin(std::move(e)); !r) {
        epoch_.reset();
        lock.unlock();
        refuse(r.error().message());
        return;
    }
    authority_.running(epoch);
}

Result<void> ClusterMember::begin(Epoch e)
{
    if (quit_) return Error("is shutting down");
    // Joining on the network thread is only safe once the thread is done:
    // a running checkpoint needs the network thread for its cut.
    if (epoch_thread_busy_) return Error("is still finishing the checkpoint of an earlier epoch");
    if (epoch_thread_.joinable()) epoch_thread_.join();
    const uint64_t number = e.number;
    epoch_ = std::move(e);
    TRY(mesh_.begin_epoch(number));
    epoch_thread_busy_ = true;
    epoch_thread_ = std::thread([this, number] {
        run_epoch(number);
        std::lock_guard lock(mutex_);
        epoch_thread_busy_ = false;
    });
    return ok();
}

json ClusterMember::local_checkpoint(const Epoch& e)
{
    MeshEpochCut cut(mesh_, e.number, e.deadline);
    auto r = checkpointer_.checkpoint({vm_root_, e.mode, e.incremental, &cut});
    if (!r) return failure(vm_ + ": " + r.error().message());
    auto digest = vm_manifest_digest(r->path);
    if (!digest) return failure(vm_ + ": " + digest.error().message());
    return {{"ok", true},       {"node", node_},          {"id", r->id},
            {"manifest_xxh3", vvmm::hex_digest(digest.value())}, {"bytes", r->bytes_written},
            {"pause_ms", r->pause_ms}, {"total_ms", r->total_ms}, {"incremental", r->incremental}};
}

// The epoch thread: this VM's checkpoint, DONE, then waiting for the outcome.
void ClusterMember::run_epoch(uint64_t number)
{
    Epoch e;
    {
        std::lock_guard lock(mutex_);
        if (!epoch_ || epoch_->number != number) return;
        e.number = epoch_->number;
        e.initiator = epoch_->initiator;
        e.mode = epoch_->mode;
        e.incremental = epoch_->incremental;
        e.parity_base = epoch_->parity_base;
        e.deadline = epoch_->deadline;
    }
    json done = local_checkpoint(e);
    if (parity_) protect(e, done);
    if (!vvmm::field_or(done, "ok", false))
        log_warn("epoch " + std::to_string(number) + ": " + vvmm::field_or<std::string>(done, "error", ""));
    if (e.initiator == vm_) on_done(vm_, number, done);
    else mesh_.send_control(e.initiator, MessageType::done, number, done);

    std::unique_lock lock(mutex_);
    cv_.wait_until(lock, e.deadline, [&] { return quit_ || !epoch_ || epoch_->number != number || epoch_->decided; });
    if (epoch_ && epoch_->number == number && !epoch_->decided) {
        if (epoch_->tally) {
            epoch_->tally->on_deadline();
            finish_if_decided(lock);
        } else {
            log_warn("epoch " + std::to_string(number) + ": no COMMIT or ABORT from " + e.initiator +
                     " in time; the epoch is not committed here");
            parity_outcome(number, nullptr);
            epoch_.reset();
            abort_cut(lock, number);
        }
    }
    const bool committed = last_committed_ == number;
    lock.unlock();
    if (!committed || config_.storage != CheckpointStorage::memory) return;
    const std::string id = vvmm::field_or<std::string>(done, "id", "");
    keep_only_committed(number, id);
    if (config_.persist_every != 0 && number % config_.persist_every == 0) {
        std::lock_guard plock(persist_mutex_);
        if (!persist_thread_.joinable()) persist_thread_ = std::thread([this] { persist_worker(); });
        persist_next_ = {number, id};
        persisting_ = true;
        persist_cv_.notify_one();
    }
}

void ClusterMember::protect(const Epoch& e, json& done)
{
    if (!vvmm::field_or(done, "ok", false)) return;
    const std::string id = vvmm::field_or<std::string>(done, "id", "");
    if (parity_->is_member()) {
        auto sent = parity_->send_changes(e.number, e.parity_base, vm_root_ + "/" + id, e.deadline);
        if (!sent) {
            done = failure(vm_ + ": " + sent.error().message());
            return;
        }
        done["image_bytes"] = sent->image_bytes;
        done["memory_bytes"] = sent->memory_bytes;
        done["memory_hashes_xxh3"] = vvmm::hex_digest(sent->memory_hashes_xxh3);
        done["parity_bytes"] = sent->parity_bytes;
        log_info("epoch " + std::to_string(e.number) + ": parity: " + std::to_string(sent->parity_bytes) +
                 " bytes of changes sent to each holder (against " +
                 (e.parity_base ? "epoch " + std::to_string(e.parity_base) : std::string("zeros: the whole image")) + ")");
    }
    if (parity_->holds_blocks()) {
        auto held = parity_->wait_held(e.number, e.deadline);
        if (!held) {
            done = failure(vm_ + ": " + held.error().message());
            return;
        }
        done["parity"] = json::array();
        for (const auto& b : held.value()) done["parity"].push_back(to_json(b));
    }
}

void ClusterMember::parity_outcome(uint64_t epoch, const ClusterManifest* committed)
{
    if (!parity_) return;
    if (committed) parity_->committed(epoch);
    else parity_->aborted(epoch);
    parity_base_ = committed && !committed->parity.empty() ? epoch : 0;
}

void ClusterMember::persist_worker()
{
    std::unique_lock lock(persist_mutex_);
    for (;;) {
        persist_cv_.wait(lock, [&] { return persist_quit_ || persist_next_; });
        if (persist_quit_) return;
        const auto [epoch, id] = *persist_next_;
        persist_next_.reset();
        lock.unlock();
        persist(epoch, id);
        lock.lock();
        if (!persist_next_) persisting_ = false;
    }
}

void ClusterMember::persist(uint64_t epoch, const std::string& id)
{
    const std::string name = "epoch " + std::to_string(epoch);
    const std::string dir = config_.persist_dir.string();
    const ckpt::SealPolicy policy{seal_key_, false};
    const auto start = Clock::now();
    auto manifest = read_cluster_manifest(node_root_, epoch, policy);
    if (!manifest) return log_warn(name + " not persisted: " + manifest.error().message());
    auto bytes = ckpt::copy_chain(vm_root_, id, vm_checkpoint_root(dir, vm_), policy);
    if (!bytes) return log_warn(name + " not persisted to " + dir + ": " + bytes.error().message());
    // Recorded once this VM's copy is complete: on a node-local persist_dir
    // the record then says exactly what the node has.
    if (auto w = write_cluster_manifest(dir, manifest.value(), seal_key_); !w)
        return log_warn(name + " copied but not recorded in " + dir + ": " + w.error().message());
    log_info(name + ": " + vm_ + "'s checkpoint persisted to " + dir + " (" + std::to_string(bytes.value() >> 20) +
             " MiB copied in " + std::to_string(static_cast<long>(ms_since(start))) + " ms)");
}

void ClusterMember::keep_only_committed(uint64_t epoch, const std::string& id)
{
    const std::string name = "epoch " + std::to_string(epoch);
    // A copy to persist_dir may be reading older checkpoints: they go next time.
    if (persisting_) return log_debug(name + ": older checkpoints stay while an epoch is being persisted");
    // The committed epoch before this one stays too: a node that was killed
    // before this epoch's COMMIT reached it can only restore that one, so
    // every node keeps it (restore --epoch) until the next commit.
    const ckpt::SealPolicy policy{seal_key_, false};
    std::vector<std::string> keep = {id};
    uint64_t previous = epoch;
    for (uint64_t e : committed_epochs(node_root_))
        if (e < epoch) previous = e;
    if (previous != epoch) {
        auto before = checkpoint_of(node_root_, previous, vm_, policy);
        if (!before) return log_warn(name + ": older checkpoints of " + vm_ + " stay in memory: " + before.error().message());
        keep.push_back(before.value());
    }
    auto removed = ckpt::remove_outside_chains(vm_root_, keep, policy);
    if (!removed) {
        log_warn(name + ": older checkpoints of " + vm_ + " stay in memory: " + removed.error().message());
        return;
    }
    if (auto r = remove_epochs_before(node_root_, previous); !r) log_warn(name + ": " + r.error().message());
    log_debug(name + ": " + std::to_string(removed.value()) + " older checkpoint(s) of " + vm_ + " removed from memory");
}

void ClusterMember::abort_cut(std::unique_lock<std::mutex>& lock, uint64_t epoch)
{
    lock.unlock();
    mesh_.abort_epoch(epoch);
    lock.lock();
}

void ClusterMember::on_done(const std::string& vm, uint64_t epoch, const json& body)
{
    std::unique_lock lock(mutex_);
    if (!epoch_ || epoch_->number != epoch || !epoch_->tally || epoch_->decided) return;
    epoch_->tally->on_done(vm, body);
    finish_if_decided(lock);
}

void ClusterMember::on_parity(const std::string& peer, const net::ParityMessage& message)
{
    if (parity_) parity_->on_parity(peer, message);
}

void ClusterMember::on_peer_lost(const std::string& peer)
{
    if (parity_) parity_->on_peer_lost(peer);
    std::unique_lock lock(mutex_);
    if (!epoch_ || !epoch_->tally || epoch_->decided) return;
    epoch_->tally->on_vm_lost(peer);
    finish_if_decided(lock);
}

void ClusterMember::finish_if_decided(std::unique_lock<std::mutex>& lock)
{
    Epoch& e = *epoch_;
    if (e.tally->outcome() == EpochInitiator::Outcome::pending) return;
    e.decided = true;
    const std::string name = "epoch " + std::to_string(e.number);
    std::string reason = e.tally->abort_reason();
    if (e.tally->outcome() == EpochInitiator::Outcome::commit) {
        ClusterManifest m{config_.name, e.number, ckpt::mode_name(e.mode), e.incremental, utc_now(),
                          ms_since(e.started), e.tally->results(), e.tally->parity_blocks()};
        auto w = parity_ ? check_epoch_parity(config_, m.vms, m.parity) : ok();
        if (w) w = write_cluster_manifest(node_root_, m, seal_key_);
        if (w) {
            mesh_.send_control("", MessageType::commit, e.number, {{"manifest", to_json(m)}});
            log_info(name + ": committed in " + std::to_string(m.epoch_ms) + " ms");
            last_committed_ = e.number;
            record_epoch_end(&m);
            parity_outcome(e.number, &m);
            json reply = to_json(m);
            reply["ok"] = true;
            e.reply(reply);
            epoch_.reset();
            cv_.notify_all();
            return;
        } else {
            reason = "cannot commit: " + w.error().message();
        }
    }
    mesh_.send_control("", MessageType::abort, e.number, {{"reason", reason}});
    log_warn(name + " aborted: " + reason + "; every VM keeps running");
    record_epoch_end(nullptr);
    parity_outcome(e.number, nullptr);
    e.reply(failure(name + " aborted: " + reason + " (every VM keeps running)"));
    const uint64_t number = e.number;
    epoch_.reset();
    cv_.notify_all();
    abort_cut(lock, number);
}

void ClusterMember::drop(const std::string& peer, MessageType type, uint64_t epoch, const std::string& why)
{
    peer_log_.warn("epoch " + std::to_string(epoch) + ": " + std::string(net::message_type_name(type)) + " from " +
                   peer + " dropped: " + why);
}

void ClusterMember::on_commit(const std::string& peer, uint64_t epoch, const json& body)
{
    auto m = body.is_object() && body.contains("manifest") ? cluster_manifest_from_json(body.at("manifest"))
                                                            : Result<ClusterManifest>(Error("no manifest"));
    std::lock_guard lock(mutex_);
    if (!m || m->epoch != epoch || m->cluster != config_.name) {
        log_error("epoch " + std::to_string(epoch) + ": malformed COMMIT ignored" + (m ? "" : ": " + m.error().message()));
        return;
    }
    // Only the initiator decides: another peer's COMMIT would record an
    // epoch as committed that is not.
    if (auto r = authority_.on_decision(peer, epoch); !r) return drop(peer, MessageType::commit, epoch, r.error().message());
    if (auto w = write_cluster_manifest(node_root_, m.value(), seal_key_); !w)
        log_error("epoch " + std::to_string(epoch) + " committed, but this node cannot record it: " + w.error().message());
    else last_committed_ = epoch;
    record_epoch_end(&m.value());
    parity_outcome(epoch, &m.value());
    if (epoch_ && epoch_->number == epoch) {
        epoch_->decided = true;
        epoch_.reset();
    }
    cv_.notify_all();
}

void ClusterMember::on_abort(const std::string& peer, uint64_t epoch, const std::string& reason)
{
    {
        std::lock_guard lock(mutex_);
        // Only the initiator aborts: another peer's ABORT would end (or,
        // with a wild number, block) this VMM's cut of a running epoch.
        if (auto r = authority_.on_decision(peer, epoch); !r) return drop(peer, MessageType::abort, epoch, r.error().message());
    }
    // Not with mutex_ held: see abort_cut.
    mesh_.abort_epoch(epoch);
    std::lock_guard lock(mutex_);
    parity_outcome(epoch, nullptr);
    if (epoch_ && epoch_->number == epoch && !epoch_->tally) {
        log_warn("epoch " + std::to_string(epoch) + " aborted: " + reason + "; the VM keeps running");
        record_epoch_end(nullptr);
        epoch_->decided = true;
        epoch_.reset();
    }
    cv_.notify_all();
}

// ---- restore ---------------------------------------------------------------------

Result<void> ClusterMember::wait_restored(uint64_t epoch, const std::function<bool()>& stop)
{
    {
        std::lock_guard lock(mutex_);
        restore_epoch_ = epoch;
        authority_.restored(epoch);
    }
    const auto start = Clock::now();
    if (rebuild_) {
        // Kept short of for ever: a rebuilder that never comes fails the restore.
        constexpr auto kRebuildTimeout = std::chrono::minutes(10);
        TRY(send_rebuild_sources(*rebuild_, vm_, node_root_, mesh_, start + kRebuildTimeout));
    }
    mesh_.send_control("", MessageType::restored, epoch, json::object());
    auto next_report = start + std::chrono::seconds(10);
    auto next_repeat = start + std::chrono::seconds(2);
    std::unique_lock lock(mutex_);
    for (;;) {
        std::string missing;
        std::vector<std::string> waiting;
        for (const auto& p : peers())
            if (!restored_.count(p + "@" + std::to_string(epoch))) {
                missing += (missing.empty() ? "" : ", ") + p;
                waiting.push_back(p);
            }
        if (missing.empty()) break;
        // Said again to those not there yet: a VMM that is rebuilding from
        // parity takes its place in the mesh only after, and a RESTORED on
        // a connection that then dropped is lost. Repeats are harmless.
        if (Clock::now() >= next_repeat) {
            for (const auto& p : waiting) mesh_.send_control(p, MessageType::restored, epoch, json::object());
            next_repeat += std::chrono::seconds(2);
        }
        if (!restore_conflict_.empty())
            return Error(restore_conflict_ + ", this VM epoch " + std::to_string(epoch) +
                         ": restore every node with the same --epoch (the older one: each node keeps the two newest)");
        if (stop()) return Error("stopped while waiting for " + missing + " to restore");
        if (Clock::now() >= next_report) {
            // Seen by default: a VM that never comes would otherwise be a silent hang.
            log_warn("restore: still waiting for " + missing + " to restore epoch " + std::to_string(epoch) +
                     unreachable_hint(config_, waiting, mesh_.connected_peer_ids()));
            next_report += std::chrono::seconds(10);
        }
        cv_.wait_for(lock, std::chrono::milliseconds(100));
    }
    restore_done_ = true;
    restored_.clear();
    log_info("restore: every VM restored epoch " + std::to_string(epoch) + " in " +
             std::to_string(ms_since(start)) + " ms; resuming");
    return ok();
}

}  // namespace vvmm::coord
