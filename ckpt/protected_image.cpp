#include "ckpt/protected_image.hpp"

#include <algorithm>
#include <cstring>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/memory_image_writer.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/small_file.hpp"

namespace vvmm::ckpt {
namespace {

constexpr char kSideMagic[8] = {'V', 'V', 'S', 'I', 'D', 'E', '1', 0};
constexpr uint64_t kMaxSideBytes = 64ull << 20;
constexpr uint32_t kMaxSideFiles = 16;

}  // namespace

std::vector<uint8_t> pack_side_files(const std::vector<SideFile>& files)
{
    // magic, count (u32), then per file: name length (u16), name, size (u64), bytes.
    std::vector<uint8_t> out(kSideMagic, kSideMagic + sizeof kSideMagic);
    uint8_t n[4];
    store_le<uint32_t>(n, static_cast<uint32_t>(files.size()));
    out.insert(out.end(), n, n + 4);
    for (const auto& f : files) {
        uint8_t len[2], size[8];
        store_le<uint16_t>(len, static_cast<uint16_t>(f.name.size()));
        store_le<uint64_t>(size, f.bytes.size());
        out.insert(out.end(), len, len + 2);
        out.insert(out.end(), f.name.begin(), f.name.end());
        out.insert(out.end(), size, size + 8);
        out.insert(out.end(), f.bytes.begin(), f.bytes.end());
    }
    out.resize((out.size() + kPageSize - 1) / kPageSize * kPageSize, 0);
    return out;
}

Result<std::vector<SideFile>> unpack_side_files(std::span<const uint8_t> in)
{
    if (in.size() < 12 || std::memcmp(in.data(), kSideMagic, sizeof kSideMagic) != 0)
        return Error("not a packed set of checkpoint files");
    const uint32_t count = load_le<uint32_t>(in.data() + 8);
    if (count > kMaxSideFiles) return Error("packed checkpoint files: " + std::to_string(count) + " files");
    std::vector<SideFile> files;
    size_t at = 12;
    for (uint32_t i = 0; i < count; ++i) {
        if (in.size() - at < 2) return Error("packed checkpoint files: truncated");
        const uint16_t len = load_le<uint16_t>(in.data() + at);
        at += 2;
        if (in.size() - at < size_t{len} + 8) return Error("packed checkpoint files: truncated");
        SideFile f{std::string(reinterpret_cast<const char*>(in.data() + at), len), {}};
        at += len;
        const uint64_t size = load_le<uint64_t>(in.data() + at);
        at += 8;
        if (size > in.size() - at) return Error("packed checkpoint files: truncated");
        // Names become files in a checkpoint directory: plain names only.
        if (f.name.empty() || f.name.find('/') != std::string::npos || f.name[0] == '.')
            return Error("packed checkpoint files: a bad file name");
        f.bytes.assign(in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(at + size));
        at += size;
        files.push_back(std::move(f));
    }
    return files;
}

Result<ProtectedImage> ProtectedImage::open(const std::string& dir, const SealPolicy& policy)
{
    TRY_ASSIGN(auto loaded, load_checkpoint(dir, policy));
    std::vector<SideFile> files;
    for (const char* name : {"manifest.json", "state.bin", "channels.bin"}) {
        if (std::string(name) == "channels.bin" && !loaded.manifest.cluster) continue;
        TRY_ASSIGN(auto text, read_small_file(dir + "/" + name, kMaxSideBytes, name, Symlinks::refuse));
        files.push_back({name, std::vector<uint8_t>(text.begin(), text.end())});
    }
    return ProtectedImage(std::move(loaded), pack_side_files(files));
}

ProtectedImage::ProtectedImage(LoadedCheckpoint loaded, std::vector<uint8_t> side)
    : loaded_(std::move(loaded)), memory_bytes_(loaded_.manifest.memory.size), side_(std::move(side))
{
}

Result<std::vector<uint8_t>> ProtectedImage::read_chunk(uint64_t c)
{
    if (c >= chunks()) return Error("chunk " + std::to_string(c) + " is past the image's end");
    const uint64_t start = c * kChunkSize;
    std::vector<uint8_t> out(static_cast<size_t>(std::min<uint64_t>(kChunkSize, length() - start)), 0);
    // Memory is a whole number of chunks (guest RAM is 2 MiB aligned).
    if (start < memory_bytes_) {
        auto zero = assemble_chunk(loaded_.chain, c, out, scratch_);
        if (!zero) return zero.error();
        return out;
    }
    if (memory_hashes_.size() != memory_chunks())
        return Error("chunk " + std::to_string(c) + " holds the memory checksums, which are not known yet");
    const uint64_t hash_bytes = hash_region_bytes(memory_chunks());
    for (uint64_t at = start; at < start + out.size(); ++at) {
        const uint64_t past = at - memory_bytes_;
        if (past < hash_bytes) {
            const uint64_t h = past / 8 < memory_hashes_.size() ? memory_hashes_[past / 8] : 0;
            out[at - start] = static_cast<uint8_t>(h >> (8 * (past % 8)));
        } else {
            out[at - start] = side_[past - hash_bytes];
        }
    }
    return out;
}

Result<void> ProtectedImage::set_memory_hashes(std::vector<uint64_t> hashes)
{
    if (hashes.size() != memory_chunks())
        return Error(std::to_string(hashes.size()) + " memory checksums for " + std::to_string(memory_chunks()) + " chunks");
    memory_hashes_ = std::move(hashes);
    return ok();
}

uint64_t ProtectedImage::hash_region_bytes(uint64_t memory_chunks)
{
    return (memory_chunks * 8 + kPageSize - 1) / kPageSize * kPageSize;
}

uint64_t ProtectedImage::max_length(uint64_t memory_bytes)
{
    const uint64_t memory = (memory_bytes + kChunkSize - 1) / kChunkSize * kChunkSize;
    // The side files, each at most kMaxSideBytes, and their packing's headers.
    return memory + hash_region_bytes(memory / kChunkSize) + kMaxSideFiles * kMaxSideBytes + kChunkSize;
}


std::vector<bool> ProtectedImage::chunks_changed_since(const std::string& base_id) const
{
    std::vector<bool> changed(chunks(), true);
    const uint64_t memory_chunks = memory_bytes_ / kChunkSize;
    const auto& chain = loaded_.chain;
    const auto base = std::find_if(chain.begin(), chain.end(), [&](const ChainLink& l) { return l.manifest.id == base_id; });
    if (base == chain.end()) return changed;
    for (uint64_t c = 0; c < memory_chunks; ++c) {
        bool touched = false;
        for (auto link = chain.begin(); link != base && !touched; ++link)
            touched = !link->pages || link->pages->any_in(c * kPagesPerChunk, kPagesPerChunk);
        changed[c] = touched;
    }
    return changed;
}

}  // namespace vvmm::ckpt
