#include "ckpt/checkpointer.hpp"

#include "vmm/base/time_text.hpp"

#include <chrono>
#include <ctime>
#include <filesystem>
#include <unistd.h>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/cow_capture.hpp"
#include "ckpt/disk_chains.hpp"
#include "ckpt/memory_image_writer.hpp"
#include "vmm/base/log.hpp"

namespace vvmm::ckpt {
namespace {

using Clock = std::chrono::steady_clock;

std::string canonical_root(const std::string& dir)
{
    std::error_code ec;
    auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(dir), ec);
    return ec ? dir : p.string();
}

// Live mode stops iterating when a round has this few dirty pages left (the
// final pause copies them), or after kMaxLiveRounds.
constexpr uint64_t kLiveStopPages = 1024;
constexpr unsigned kMaxLiveRounds = 10;

}  // namespace

nlohmann::json CheckpointResult::to_json() const
{
    nlohmann::json j = {{"ok", true},
                        {"id", id},
                        {"path", path},
                        {"mode", mode_name(mode)},
                        {"incremental", incremental},
                        {"parent", parent ? nlohmann::json(*parent) : nlohmann::json(nullptr)},
                        {"pause_ms", pause_ms},
                        {"total_ms", total_ms},
                        {"bytes_written", bytes_written},
                        {"pages_written", pages}};
    if (mode == CheckpointMode::cow) j["longest_stall_ms"] = longest_stall_ms;
    if (mode == CheckpointMode::live) j["live_rounds"] = live_rounds;
    if (!note.empty()) j["note"] = note;
    return j;
}

// One checkpoint, from choosing its id to publishing it.
class CheckpointRun {
public:
    CheckpointRun(Checkpointer& cp, const CheckpointRequest& req)
        : cp_(cp), req_(req), mem_(cp.parts_.machine->memory()), taken_(mem_.guest_phys_end() / kPageSize)
    {
    }
    ~CheckpointRun() { cleanup(); }
    Result<CheckpointResult> execute();

private:
    Result<std::string> checkpoint_root() const;
    Result<void> prepare();
    Result<void> pause();
    void unpause();
    Result<Bitmap> pages_at_pause();
    Result<void> copy_pages(const Bitmap& pages);
    Result<void> freeze_disks();
    Result<void> run_stop();
    Result<void> run_live();
    Result<void> run_cow();
    Result<void> commit(const MemoryImageSummary& memory);
    void cleanup();
    Bitmap all_ram_pages() const;

    Checkpointer& cp_;
    CheckpointRequest req_;
    const vmm::GuestMemory& mem_;
    CheckpointResult result_;
    std::string root_, tmp_;
    std::unique_ptr<MemoryImageWriter> writer_;
    std::vector<Section> sections_;
    std::vector<dev::ChainDescription> disks_;
    Bitmap taken_;  // dirty pages taken from the tracker (given back on failure)
    std::vector<bool> touched_;  // chunks the guest ever touched, at the pause
    bool paused_here_ = false, committed_ = false;
    Clock::time_point start_ = Clock::now(), pause_start_;
};

Bitmap CheckpointRun::all_ram_pages() const
{
    Bitmap b(mem_.guest_phys_end() / kPageSize);
    for (const auto& r : mem_.regions())
        b.set_range(r.guest_phys / kPageSize, r.size / kPageSize);
    return b;
}

// The directory this checkpoint goes into: the one asked for, or the VM's.
Result<std::string> CheckpointRun::checkpoint_root() const
{
    const VmParts& parts = cp_.parts_;
    if (parts.confined && parts.checkpoint_dir.empty())
        return Error("this VM has no checkpoint directory, and its sandbox lets it write checkpoints nowhere else: "
                     "start it with --checkpoint-dir DIR");
    const std::string asked = req_.dir.empty() ? parts.checkpoint_dir : req_.dir;
    if (asked.empty()) return Error("no checkpoint directory: name one (--dir), or start the VM with --checkpoint-dir DIR");
    std::string root = canonical_root(asked);
    if (parts.confined) {
        const std::string allowed = canonical_root(parts.checkpoint_dir);
        if (root != allowed && !root.starts_with(allowed + "/"))
            return Error(root + " is outside this VM's checkpoint directory " + allowed +
                         " (--checkpoint-dir), the only place its sandbox lets it write");
    }
    return root;
}

Result<void> CheckpointRun::prepare()
{
    TRY_ASSIGN(root_, checkpoint_root());
    TRY(cp_.seal_key());  // no key, no checkpoint: found out before the VM pauses
    TRY(prepare_root(root_));
    if (cp_.parts_.wait_memory_loaded) {
        const auto t = Clock::now();
        cp_.parts_.wait_memory_loaded();
        if (const double waited = ms_since(t); waited >= 1)
            log_info("checkpoint: waited " + std::to_string(static_cast<long>(waited)) +
                     " ms for the restore to finish loading guest memory");
    }
    TRY_ASSIGN(result_.id, next_id(root_));
    result_.path = root_ + "/" + result_.id;
    result_.mode = req_.mode;
    if (req_.incremental) {
        const auto& parent = cp_.parent_;
        if (!parent) result_.note = "no earlier checkpoint of this VM: full checkpoint";
        else if (parent->root != root_) result_.note = "the last checkpoint is in another directory: full checkpoint";
        else if (parent->depth + 1 >= kMaxChainDepth) result_.note = "chain depth limit reached: full checkpoint";
        else if (!std::filesystem::exists(root_ + "/" + parent->id)) result_.note = "the parent checkpoint was removed: full checkpoint";
        else {
            result_.incremental = true;
            result_.parent = parent->id;
        }
    }
    // Dirty logging starts with the first checkpoint, before its pause (a
    // memory-slot update is slow); it stays on for the incremental ones.
    if (!cp_.dirty_.active()) TRY(cp_.dirty_.start());
    tmp_ = root_ + "/.tmp-" + result_.id + "-" + std::to_string(::getpid());
    std::error_code ec;
    if (!std::filesystem::create_directory(tmp_, ec)) return Error("cannot create " + tmp_ + ": " + ec.message());
    TRY_ASSIGN(writer_, MemoryImageWriter::create(tmp_ + "/memory.img", mem_.guest_phys_end()));
    return ok();
}

Result<void> CheckpointRun::pause()
{
    EpochCut* cut = req_.epoch;
    if (cut) cut->hold_delivery();  // the VM still runs: not part of its pause
    pause_start_ = Clock::now();
    if (cp_.user_pause_ && !cut) {
        sections_ = cp_.user_pause_->sections;
        return ok();
    }
    if (cp_.user_pause_) {
        // Frames may have reached the quiesced card since the user's pause:
        // capture again, at the cut.
        auto sections = capture_sections(cp_.parts_.components);
        if (!sections) {
            cut->release();
            return sections.error();
        }
        sections_ = std::move(sections).value();
    } else {
        Checkpointer::Paused p;
        if (auto r = cp_.enter_pause(p); !r) {
            if (cut) cut->release();
            return r;
        }
        sections_ = std::move(p.sections);
        paused_here_ = true;
    }
    if (cut) {
        const auto t = Clock::now();
        cut->cut();
        log_debug("checkpoint: network cut of epoch " + std::to_string(cut->epoch()) + " in " +
                  std::to_string(ms_since(t)) + " ms");
    }
    return ok();
}

void CheckpointRun::unpause()
{
    if (paused_here_) {
        const auto t = Clock::now();
        cp_.leave_pause();
        paused_here_ = false;
        log_debug("checkpoint: resumed in " + std::to_string(ms_since(t)) + " ms");
    }
    result_.pause_ms += ms_since(pause_start_);
}

// At the pause instant: the pages of this checkpoint (all RAM, or those
// written since the parent), and the dirty baseline for the next one.
Result<Bitmap> CheckpointRun::pages_at_pause()
{
    touched_ = mem_.touched_chunks();
    TRY_ASSIGN(Bitmap dirty, cp_.dirty_.take());
    taken_.merge(dirty);
    if (result_.incremental) return dirty;
    return all_ram_pages();
}

Result<void> CheckpointRun::copy_pages(const Bitmap& pages)
{
    const auto& words = pages.words();
    const uint64_t chunks = pages.size() / kPagesPerChunk;
    for (uint64_t c = 0; c < chunks; ++c) {
        uint64_t mask[kPagesPerChunk / 64];
        bool any = false;
        for (unsigned w = 0; w < kPagesPerChunk / 64; ++w) any |= (mask[w] = words[c * 8 + w]) != 0;
        if (!any) continue;
        const uint8_t* src = mem_.host_page(c * kChunkSize);
        if (!src) continue;
        if (c < touched_.size() && !touched_[c]) {
            writer_->add_zero(c, mask);
            continue;
        }
        TRY_ASSIGN(auto copy, writer_->copy_here(c, src, mask));
        TRY(writer_->submit(copy));
    }
    return writer_->reap(false);
}

Result<void> CheckpointRun::freeze_disks()
{
    if (!cp_.parts_.freeze_disks) return ok();
    const std::string overlays = root_ + "/.layers";
    std::error_code ec;
    std::filesystem::create_directories(overlays, ec);
    if (ec) return Error("cannot create " + overlays + ": " + ec.message());
    TRY_ASSIGN(disks_, cp_.parts_.freeze_disks(overlays));
    return ok();
}

Result<void> CheckpointRun::run_stop()
{
    TRY(pause());
    TRY_ASSIGN(Bitmap pages, pages_at_pause());
    TRY(freeze_disks());
    TRY(copy_pages(pages));
    // The guest runs again as soon as its pages are in our buffers or on their way to disk.
    TRY_ASSIGN(auto summary, writer_->finish());
    unpause();
    return commit(summary);
}

Result<void> CheckpointRun::run_live()
{
    // Round 0 copies everything this checkpoint needs while the guest runs;
    // each later round copies what the guest wrote meanwhile.
    Bitmap pages;
    {
        TRY_ASSIGN(Bitmap dirty, cp_.dirty_.take());
        taken_.merge(dirty);
        pages = result_.incremental ? std::move(dirty) : all_ram_pages();
    }
    if (cp_.user_pause_) {  // nothing changes while paused: one pass is exact
        TRY(pause());
    } else {
        for (;;) {
            touched_ = mem_.touched_chunks();
            TRY(copy_pages(pages));
            // The next round may write some of these pages again.
            TRY(writer_->drain());
            ++result_.live_rounds;
            TRY_ASSIGN(Bitmap dirty, cp_.dirty_.take());
            taken_.merge(dirty);
            const uint64_t n = dirty.count();
            const bool shrinking = n < pages.count();
            pages = std::move(dirty);
            if (n <= kLiveStopPages || result_.live_rounds >= kMaxLiveRounds || !shrinking) break;
        }
        TRY(pause());
        TRY_ASSIGN(Bitmap last, cp_.dirty_.take());
        taken_.merge(last);
        pages.merge(last);
    }
    TRY(freeze_disks());
    touched_ = mem_.touched_chunks();
    TRY(copy_pages(pages));
    unpause();
    TRY_ASSIGN(auto summary, writer_->finish());
    // Every round wrote into the same image: the pages of this checkpoint
    // are all pages taken (incremental) or all RAM (full).
    if (result_.incremental && summary.page_map.count() != taken_.count())
        return Error("live checkpoint lost track of dirty pages (internal error)");
    return commit(summary);
}

Result<void> CheckpointRun::run_cow()
{
    TRY(pause());
    auto t = Clock::now();
    TRY_ASSIGN(Bitmap pages, pages_at_pause());
    const double dirty_ms = ms_since(t);
    t = Clock::now();
    TRY(freeze_disks());
    const double disks_ms = ms_since(t);
    t = Clock::now();
    TRY_ASSIGN(auto cow, CowCapture::start(mem_, pages, touched_, *writer_));
    log_debug("checkpoint: dirty log " + std::to_string(dirty_ms) + " ms, disks " + std::to_string(disks_ms) +
              " ms, write-protect " + std::to_string(ms_since(t)) + " ms");
    unpause();
    TRY(cow->run());
    result_.longest_stall_ms = cow->longest_stall_ms();
    TRY_ASSIGN(auto summary, writer_->finish());
    return commit(summary);
}

Result<void> CheckpointRun::commit(const MemoryImageSummary& memory)
{
    Manifest m;
    m.id = result_.id;
    m.parent = result_.parent;
    m.depth = result_.incremental ? cp_.parent_->depth + 1 : 0;
    m.mode = mode_name(req_.mode);
    m.created = utc_now();
    m.vm = cp_.parts_.vm;
    m.memory.size = mem_.guest_phys_end();
    m.memory.full = !result_.incremental;
    m.memory.chunks = memory.chunk_hashes;
    if (result_.incremental) {
        const auto& w = memory.page_map.words();
        TRY_ASSIGN(m.memory.page_map, write_durable(tmp_, "memory.map",
                                                    {reinterpret_cast<const uint8_t*>(w.data()), w.size() * 8}));
    }
    const auto state = encode_state(sections_);
    TRY_ASSIGN(m.state, write_durable(tmp_, "state.bin", state));
    if (req_.epoch) {
        // The checkpoint is published only with its channel state: it waits
        // for every peer's marker (usually in long ago).
        TRY_ASSIGN(auto channels, req_.epoch->channel_state());
        TRY_ASSIGN(auto file, write_durable(tmp_, "channels.bin", channels));
        m.cluster = EpochPart{req_.epoch->epoch(), file};
    }
    // The frozen layers become part of the checkpoint by hard links (O(1)).
    TRY_ASSIGN(m.disks, link_disk_layers(disks_, tmp_));
    result_.bytes_written = memory.bytes_written + state.size();
    result_.pages = memory.pages;
    result_.total_ms = ms_since(start_);
    m.stats = {{"pause_ms", result_.pause_ms}, {"total_ms", result_.total_ms}, {"bytes_written", result_.bytes_written},
               {"pages", result_.pages}, {"direct_io", writer_->direct_io()}};
    nlohmann::json manifest = to_json(m);
    TRY_ASSIGN(const SealKey* key, cp_.seal_key());
    seal_manifest(manifest, *key);
    const std::string text = manifest.dump(1) + "\n";
    TRY(write_durable(tmp_, "manifest.json", {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
    writer_.reset();
    TRY(publish(tmp_, root_, result_.id));
    committed_ = true;
    result_.total_ms = ms_since(start_);
    return ok();
}

void CheckpointRun::cleanup()
{
    writer_.reset();
    if (paused_here_) unpause();
    if (!committed_) {
        cp_.dirty_.give_back(taken_);
        if (!tmp_.empty()) {
            std::error_code ec;
            std::filesystem::remove_all(tmp_, ec);
        }
    }
}

Result<CheckpointResult> CheckpointRun::execute()
{
    TRY(prepare());
    switch (req_.mode) {
    case CheckpointMode::stop: TRY(run_stop()); break;
    case CheckpointMode::live: TRY(run_live()); break;
    case CheckpointMode::cow: TRY(run_cow()); break;
    }
    return result_;
}

Checkpointer::Checkpointer(VmParts parts)
    : parts_(std::move(parts)), dirty_(parts_.machine->vm(), parts_.machine->memory())
{
    thread_ = std::thread([this] { thread_main(); });
}

Checkpointer::~Checkpointer()
{
    {
        std::lock_guard lock(job_mutex_);
        quit_ = true;
    }
    job_cv_.notify_all();
    thread_.join();
}

void Checkpointer::thread_main()
{
    std::unique_lock lock(job_mutex_);
    for (;;) {
        job_cv_.wait(lock, [&] { return quit_ || job_; });
        if (quit_) return;
        auto job = std::move(job_);
        job_ = nullptr;
        lock.unlock();
        job();
        lock.lock();
    }
}

Result<void> Checkpointer::enter_pause(Paused& out)
{
    const auto t0 = Clock::now();
    parts_.machine->pause();
    const double parked_ms = ms_since(t0);
    for (size_t i = 0; i < parts_.components.size(); ++i) {
        if (auto r = parts_.components[i]->quiesce(); !r) {
            for (size_t j = 0; j <= i; ++j) parts_.components[j]->unquiesce();
            parts_.machine->resume();
            return r.error().context("quiescing " + std::string(parts_.components[i]->section()));
        }
    }
    auto sections = capture_sections(parts_.components);
    if (!sections) {
        leave_pause();
        return sections.error();
    }
    out.sections = std::move(sections).value();
    log_debug("checkpoint: vCPUs parked in " + std::to_string(parked_ms) + " ms, devices quiesced and state captured in " +
              std::to_string(ms_since(t0) - parked_ms) + " ms");
    return ok();
}

void Checkpointer::leave_pause()
{
    for (auto* c : parts_.components) c->unquiesce();
    parts_.machine->resume();
}

Result<void> Checkpointer::pause()
{
    std::lock_guard lock(mutex_);
    if (user_pause_) return ok();
    Paused p;
    TRY(enter_pause(p));
    user_pause_ = std::move(p);
    std::lock_guard status(status_mutex_);
    paused_ = true;
    return ok();
}

Result<void> Checkpointer::resume()
{
    std::lock_guard lock(mutex_);
    if (!user_pause_) return ok();
    user_pause_.reset();
    leave_pause();
    std::lock_guard status(status_mutex_);
    paused_ = false;
    return ok();
}

bool Checkpointer::paused() const
{
    std::lock_guard lock(status_mutex_);
    return paused_;
}

std::optional<CheckpointResult> Checkpointer::last() const
{
    std::lock_guard lock(status_mutex_);
    return last_;
}

unsigned Checkpointer::count() const
{
    std::lock_guard lock(status_mutex_);
    return count_;
}

Result<CheckpointResult> Checkpointer::run(const CheckpointRequest& request)
{
    CheckpointRun run(*this, request);
    auto r = run.execute();
    if (r) {
        parent_ = Parent{std::filesystem::path(r->path).parent_path().string(), r->id,
                         r->incremental ? parent_->depth + 1 : 0};
        std::lock_guard status(status_mutex_);
        last_ = r.value();
        ++count_;
    }
    return r;
}

Result<CheckpointResult> Checkpointer::checkpoint(const CheckpointRequest& request)
{
    std::lock_guard lock(mutex_);
    std::optional<Result<CheckpointResult>> result;
    std::mutex done_mutex;
    std::condition_variable done_cv;
    {
        std::lock_guard job_lock(job_mutex_);
        job_ = [&] {
            auto r = run(request);
            std::lock_guard l(done_mutex);
            result.emplace(std::move(r));
            done_cv.notify_all();
        };
    }
    job_cv_.notify_all();
    std::unique_lock l(done_mutex);
    done_cv.wait(l, [&] { return result.has_value(); });
    return std::move(*result);
}

Result<const SealKey*> Checkpointer::seal_key()
{
    if (!seal_key_) {
        if (!parts_.seal_key) return Error("this VM has no key to seal its checkpoints with");
        TRY_ASSIGN(seal_key_, parts_.seal_key());
    }
    return &*seal_key_;
}

Result<void> Checkpointer::adopt_parent(const std::string& dir, const Manifest& restored)
{
    std::lock_guard lock(mutex_);
    parent_ = Parent{std::filesystem::path(canonical_root(dir)).parent_path().string(), restored.id, restored.depth};
    return dirty_.start();
}

}  // namespace vvmm::ckpt
