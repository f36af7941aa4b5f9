// Takes checkpoints of one running VM, on a dedicated checkpoint thread:
//   stop  pause, save everything, resume;
//   live  copy memory while the guest runs (dirty logging), iterate, then a
//         short pause for the last dirty pages and the device state;
//   cow   pause, capture vCPU/device state, write-protect memory
//         (userfaultfd), resume at once; pages are saved in the background
//         and a page the guest wants to write is saved first.
// Each checkpoint is written in a temporary directory, fsynced and renamed:
// it is either complete and verified or not there.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint_mode.hpp"
#include "ckpt/dirty_tracker.hpp"
#include "ckpt/epoch_cut.hpp"
#include "ckpt/manifest.hpp"
#include "ckpt/state_file.hpp"
#include "devices/disk_layers.hpp"
#include "vmm/base/snapshottable.hpp"
#include "vmm/machine.hpp"

namespace vvmm::ckpt {

struct VmParts {
    vmm::Machine* machine = nullptr;
    std::vector<Snapshottable*> components;  // every section, in restore order
    // VM paused, no I/O in flight: freeze each disk's top layer (new
    // overlays go to `overlay_dir`) and describe the chains.
    std::function<Result<std::vector<dev::ChainDescription>>(const std::string& overlay_dir)> freeze_disks;
    vmm::VmDescription vm;  // what each manifest records
    // The key every manifest is sealed with, asked for at the first
    // checkpoint (a VM that is never checkpointed needs none).
    std::function<Result<SealKey>()> seal_key;
    // Where checkpoints go when a request names no directory. `confined`:
    // the only tree they may go to (the sandbox lets the VMM write nowhere else).
    std::string checkpoint_dir;
    bool confined = false;
    // Blocks until all of guest memory is in place. A restored VM loads it
    // lazily: a chunk not loaded yet is a hole that reads as zeros, and its
    // userfaultfd registration excludes a cow checkpoint's.
    std::function<void()> wait_memory_loaded;
};


struct CheckpointRequest {
    std::string dir;
    CheckpointMode mode = CheckpointMode::stop;
    bool incremental = false;
    // Part of a cluster epoch: the network cut is taken with the state.
    EpochCut* epoch = nullptr;
};

struct CheckpointResult {
    std::string id, path;
    CheckpointMode mode = CheckpointMode::stop;
    bool incremental = false;
    std::optional<std::string> parent;
    std::string note;  // why an incremental request became a full one
    double pause_ms = 0, total_ms = 0, longest_stall_ms = 0;
    uint64_t bytes_written = 0, pages = 0;
    unsigned live_rounds = 0;
    nlohmann::json to_json() const;
};

// Incremental chains are cut at this depth: the next checkpoint is full, so
// a restore never reads more than this many images.
inline constexpr unsigned kMaxChainDepth = 8;

class Checkpointer {
public:
    explicit Checkpointer(VmParts parts);
    ~Checkpointer();

    // User pause/resume (the state is captured once, at pause).
    Result<void> pause();
    Result<void> resume();
    bool paused() const;
    // Runs the checkpoint on the checkpoint thread and waits for it.
    Result<CheckpointResult> checkpoint(const CheckpointRequest& request);
    std::optional<CheckpointResult> last() const;
    unsigned count() const;

    // After a restore: the restored checkpoint is the parent of the next
    // incremental one, and dirty tracking starts now (call before the vCPUs run).
    Result<void> adopt_parent(const std::string& dir, const Manifest& restored);

private:
    struct Parent {
        std::string root, id;
        unsigned depth = 0;
    };
    struct Paused {
        std::vector<Section> sections;
    };
    Result<void> enter_pause(Paused& out);
    void leave_pause();
    Result<CheckpointResult> run(const CheckpointRequest& request);
    void thread_main();
    // parts_.seal_key's answer, kept once had (checkpoint thread only).
    Result<const SealKey*> seal_key();

    VmParts parts_;
    DirtyTracker dirty_;

    std::mutex mutex_;  // serializes pause/resume/checkpoint
    std::optional<Paused> user_pause_;
    std::optional<Parent> parent_;
    // What status reports; readable while a checkpoint holds mutex_.
    mutable std::mutex status_mutex_;
    bool paused_ = false;
    std::optional<CheckpointResult> last_;
    unsigned count_ = 0;
    std::optional<SealKey> seal_key_;

    // The checkpoint thread: one job at a time.
    std::mutex job_mutex_;
    std::condition_variable job_cv_;
    std::function<void()> job_;
    bool quit_ = false;
    std::thread thread_;

    friend class CheckpointRun;
};

}  // namespace vvmm::ckpt
