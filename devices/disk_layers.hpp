// A virtio-blk disk as a chain of layers: the base image (the --disk file)
// plus copy-on-write overlay files. Until the first freeze the base takes
// the writes directly; a freeze (at a checkpoint, O(1): no data is copied)
// makes the top layer immutable and a new empty overlay takes the writes.
//
// An overlay is a sparse raw file as big as the disk (same offsets) that
// holds whole 4 KiB blocks. When frozen, the blocks it holds are written to
// a side file `<layer>.map` (magic, version, block size, disk size, runs,
// xxh64). In memory one byte per block names the layer that owns it, so a
// read costs the same whatever the chain length. The map checksum covers
// only the map: layer data is not checksummed (that would make a freeze
// cost as much as the data written).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/disk_image.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/state_stream.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::dev {

inline constexpr uint64_t kLayerBlockSize = 4096;
// Overlays a chain can hold (owner index is one byte, 0 = base).
inline constexpr size_t kMaxOverlays = 255;

struct FrozenLayer {
    std::string data_path;  // sparse raw layer file
    std::string map_path;   // its allocation map (data_path + ".map" when frozen here)
};

// What a checkpoint records of a disk (valid right after freeze()): enough
// to open the same chain again. mtime+size of the base is a weak check that
// it was not modified since: it catches the usual accidents, not a
// deliberate change that restores the mtime.
struct ChainDescription {
    DiskSpec base;  // path, readonly, id
    uint64_t size = 0;
    int64_t base_mtime_ns = 0;
    std::vector<FrozenLayer> layers;  // bottom to top, all frozen
};
void save_chain_description(StateWriter& out, const ChainDescription& d);
Result<ChainDescription> load_chain_description(StateReader& in);

// One piece of a read: `len` bytes at `offset` of file `fd`.
struct DiskExtent {
    int fd;
    uint64_t offset;
    uint64_t len;
};

// Not thread-safe: the owner (VirtioBlk, under its device lock) serialises calls.
class DiskChain {
public:
    // The base alone: writes go to it until the first freeze().
    static Result<DiskChain> open(const DiskSpec& spec);
    // A chain from a checkpoint: the base (checked against size and mtime),
    // the frozen layers in order (every map validated), and, unless the
    // disk is read-only, a new empty overlay in `overlay_dir` for the writes.
    // Two opens of the same description are two independent branches.
    static Result<DiskChain> open(const ChainDescription& d, const std::string& overlay_dir);

    uint64_t size() const { return size_; }
    bool readonly() const { return spec_.readonly; }
    const DiskSpec& spec() const { return spec_; }
    size_t overlay_count() const { return overlays_.size(); }
    // Path of the writable top (the base until the first freeze).
    const std::string& top_path() const;

    // Splits [offset, offset+len) into runs by owning layer, in order.
    // The range must lie inside the disk (callers check).
    void plan_read(uint64_t offset, uint64_t len, std::vector<DiskExtent>& out) const;
    // Makes the top layer own every block of [offset, offset+len), copying
    // up first a partly covered block it does not hold yet (synchronous
    // pread/pwrite: rare, only at unaligned edges). Returns the fd to write
    // the data to at `offset`. If that write then fails the blocks it fully
    // covers read as zeros: a failed write leaves its sectors undefined.
    Result<int> prepare_write(uint64_t offset, uint64_t len);
    // The fd a flush fsyncs.
    int top_fd() const;

    // Synchronous forms (tests, tools).
    Result<void> read(uint64_t offset, std::span<uint8_t> out) const;
    Result<void> write(uint64_t offset, std::span<const uint8_t> in);

    // Call with no request in flight. Makes the top immutable (fsynced; for
    // an overlay, its map written and fsynced) and puts a new empty overlay
    // created in `overlay_dir` on top. A read-only disk gets no overlay.
    // Returns the chain as a checkpoint must record it. On error the chain
    // is unchanged and still writable.
    Result<ChainDescription> freeze(const std::string& overlay_dir);
    // The chain up to the last freeze (or as opened).
    const ChainDescription& description() const { return desc_; }

private:
    struct Overlay {
        UniqueFd fd;
        std::string path;
    };
    DiskChain(DiskSpec spec, UniqueFd base, uint64_t size) : spec_(std::move(spec)), base_(std::move(base)), size_(size) {}
    int fd_of(uint8_t owner) const { return owner == 0 ? base_.get() : overlays_[owner - 1].fd.get(); }
    uint64_t block_count() const { return (size_ + kLayerBlockSize - 1) / kLayerBlockSize; }
    Result<void> copy_up(uint64_t block);
    Result<Overlay> create_overlay(const std::string& dir) const;
    Result<void> apply_map(const std::string& path, uint8_t owner);

    DiskSpec spec_;
    UniqueFd base_;
    uint64_t size_;
    std::vector<Overlay> overlays_;  // overlays_[i] is owner i+1; the last one is the top
    std::vector<uint8_t> owner_;     // per block; empty while there is no overlay
    std::vector<uint64_t> top_new_;  // blocks the top took since it became the top (for its map)
    ChainDescription desc_;
};

// Map files (exposed for tests): writes the map of `blocks` (any order,
// no duplicates) and fsyncs it; reads and validates one against `disk_size`.
Result<void> write_layer_map(const std::string& path, uint64_t disk_size, std::vector<uint64_t> blocks);
// Runs (first block, count), sorted and disjoint.
Result<std::vector<std::pair<uint64_t, uint64_t>>> read_layer_map(const std::string& path, uint64_t disk_size);

}  // namespace vvmm::dev
