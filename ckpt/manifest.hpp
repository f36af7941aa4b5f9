// manifest.json: what a checkpoint directory holds and how to check it.
// It is read before anything else of a checkpoint and validated field by
// field, so a damaged or foreign manifest is refused with one clear line.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/image_format.hpp"
#include "ckpt/manifest_seal.hpp"
#include "vmm/base/result.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::ckpt {

// Restore refuses longer chains (checkpoints cut them at kMaxChainDepth).
inline constexpr unsigned kMaxChainDepthLoad = 64;

struct FileDigest {
    std::string file;
    uint64_t size = 0;
    uint64_t xxh3 = 0;
};

struct DiskLayers {
    std::string base;             // path of the read-only base image
    uint64_t base_size = 0;
    int64_t base_mtime_ns = 0;    // a cheap check that the base was not changed
    std::vector<std::string> layers;  // frozen overlay files in this directory, bottom first
};

struct MemoryImage {
    std::string file = "memory.img";
    uint64_t size = 0;  // file size: end of guest RAM in guest-physical space
    // Full: every page is in this image (zero pages as holes). Incremental:
    // only the pages set in page_map; the others come from the parent.
    bool full = true;
    std::optional<FileDigest> page_map;
    // xxh3 of each 2 MiB chunk of the file as read (holes read as zeros);
    // nullopt for chunks that hold no page of this image.
    std::vector<std::optional<uint64_t>> chunks;
};

// A checkpoint taken as part of a cluster epoch also holds the frames that
// were in flight towards this VM across the cut (see net/channel_cut.hpp).
struct EpochPart {
    uint64_t epoch = 0;
    FileDigest channels;
};

struct Manifest {
    uint32_t format_version = kFormatVersion;  // as read; to_json writes the current one
    std::string id;
    std::optional<std::string> parent;  // id of the parent, a sibling directory
    unsigned depth = 0;                 // incremental links since the last full checkpoint
    std::string mode;
    std::string created;  // UTC, ISO 8601
    vmm::VmDescription vm;  // restore rebuilds exactly this machine
    FileDigest state;
    MemoryImage memory;
    std::vector<DiskLayers> disks;
    std::optional<EpochPart> cluster;
    nlohmann::json stats = nlohmann::json::object();
};

nlohmann::json to_json(const Manifest& m);
Result<Manifest> manifest_from_json(const nlohmann::json& j);
// Checks the seal (see manifest_seal.hpp) before any field.
Result<Manifest> read_manifest(const std::string& dir, const SealPolicy& policy);

}  // namespace vvmm::ckpt
