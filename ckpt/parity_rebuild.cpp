#include "ckpt/parity_rebuild.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <memory>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/manifest.hpp"
#include "ckpt/memory_hash.hpp"
#include "ckpt/protected_image.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/positional_io.hpp"

namespace vvmm::ckpt {
namespace {

namespace fs = std::filesystem;

// A rebuilt image is as long as a parity block may be.
bool all_zero(std::span<const uint8_t> bytes)
{
    return std::all_of(bytes.begin(), bytes.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

Result<ParityRebuild> ParityRebuild::create(const ParityCodec& codec, std::vector<unsigned> lost,
                                            std::vector<unsigned> parity_used, const std::string& work_dir,
                                            uint64_t max_bytes)
{
    if (lost.empty()) return Error("nothing to rebuild");
    if (parity_used.size() < lost.size())
        return Error(std::to_string(lost.size()) + " members of the set are lost and only " +
                     std::to_string(parity_used.size()) + " of its parity blocks survive");
    for (unsigned m : lost)
        if (m >= codec.data_blocks()) return Error("member " + std::to_string(m) + " is not in the set");
    for (unsigned j : parity_used)
        if (j >= codec.parity_blocks()) return Error("parity block " + std::to_string(j) + " is not in the set");
    ParityRebuild r(codec, std::move(lost), std::move(parity_used), max_bytes);
    std::error_code ec;
    fs::create_directories(work_dir, ec);
    if (ec) return Error("cannot create " + work_dir + ": " + ec.message());
    for (size_t i = 0; i < r.parity_used_.size(); ++i) {
        // Unnamed: the residuals go with the process.
        UniqueFd fd(::open(work_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
        if (!fd.valid()) return errno_error("creating a rebuild residual in " + work_dir);
        r.residuals_.push_back(std::move(fd));
    }
    return r;
}

Result<void> ParityRebuild::fold(size_t residual, uint64_t offset, std::span<const uint8_t> data, int member)
{
    if (offset > max_bytes_ || data.size() > max_bytes_ - offset)
        return Error("rebuild data past " + std::to_string(max_bytes_) + " bytes, the longest image of the set");
    buffer_.resize(data.size());
    const int fd = residuals_[residual].get();
    TRY(read_at_or_zero(fd, buffer_.data(), buffer_.size(), offset, "a rebuild residual"));
    if (member < 0) {
        for (size_t i = 0; i < data.size(); ++i) buffer_[i] ^= data[i];
    } else {
        codec_->update_block(static_cast<unsigned>(member), parity_used_[residual], data.data(), buffer_.data(), data.size());
    }
    return write_all_at(fd, buffer_.data(), buffer_.size(), offset, "a rebuild residual");
}

Result<void> ParityRebuild::add_member(unsigned member, uint64_t offset, std::span<const uint8_t> data)
{
    if (member >= codec_->data_blocks() || std::find(lost_.begin(), lost_.end(), member) != lost_.end())
        return Error("member " + std::to_string(member) + " is not a survivor of the set");
    for (size_t j = 0; j < residuals_.size(); ++j) TRY(fold(j, offset, data, static_cast<int>(member)));
    return ok();
}

Result<void> ParityRebuild::add_parity(unsigned parity_index, uint64_t offset, std::span<const uint8_t> data)
{
    const auto at = std::find(parity_used_.begin(), parity_used_.end(), parity_index);
    if (at == parity_used_.end()) return Error("parity block " + std::to_string(parity_index) + " is not used");
    return fold(static_cast<size_t>(at - parity_used_.begin()), offset, data, -1);
}

Result<std::vector<std::vector<uint8_t>>> ParityRebuild::solve_chunk(uint64_t c) const
{
    const unsigned n = codec_->data_blocks(), k = codec_->parity_blocks();
    // The survivors' share is already out of the residuals: to the codec
    // they are zeros, the residuals the parity, the unused parity lost.
    std::vector<std::vector<uint8_t>> blocks(n + k, std::vector<uint8_t>(kChunkSize, 0));
    const std::unique_ptr<bool[]> lost(new bool[n + k]());
    for (unsigned m : lost_) lost[m] = true;
    for (unsigned j = 0; j < k; ++j) {
        const auto at = std::find(parity_used_.begin(), parity_used_.end(), j);
        if (at == parity_used_.end()) {
            lost[n + j] = true;
            continue;
        }
        TRY(read_at_or_zero(residuals_[static_cast<size_t>(at - parity_used_.begin())].get(), blocks[n + j].data(),
                            kChunkSize, c * kChunkSize, "a rebuild residual"));
    }
    std::vector<uint8_t*> pointers;
    for (auto& b : blocks) pointers.push_back(b.data());
    TRY(codec_->rebuild(pointers, std::span<const bool>(lost.get(), n + k), kChunkSize));
    std::vector<std::vector<uint8_t>> out;
    for (unsigned m : lost_) out.push_back(std::move(blocks[m]));
    return out;
}

// ---- the rebuilt checkpoint ------------------------------------------------------

namespace {

// The image's bytes [from, to) through `chunk`.
Result<std::vector<uint8_t>> image_range(const std::function<Result<std::vector<uint8_t>>(uint64_t)>& chunk,
                                         uint64_t from, uint64_t to)
{
    std::vector<uint8_t> out;
    for (uint64_t c = from / kChunkSize; c * kChunkSize < to; ++c) {
        TRY_ASSIGN(auto bytes, chunk(c));
        const uint64_t start = c * kChunkSize;
        const uint64_t a = std::max(from, start), b = std::min(to, start + bytes.size());
        if (b < std::min(to, start + kChunkSize)) return Error("chunk " + std::to_string(c) + " is short");
        out.insert(out.end(), bytes.begin() + static_cast<std::ptrdiff_t>(a - start),
                   bytes.begin() + static_cast<std::ptrdiff_t>(b - start));
    }
    return out;
}

// The checkpoint's manifest, checked, made a full one (its memory chunks'
// checksums are set once the memory is written).
Result<Manifest> full_manifest(const std::vector<SideFile>& files, const RebuildTarget& t, const SealKey& key)
{
    const auto m = std::find_if(files.begin(), files.end(), [](const SideFile& f) { return f.name == "manifest.json"; });
    if (m == files.end()) return Error("the rebuilt image has no manifest.json");
    if (digest_of(m->bytes) != t.manifest_xxh3) return Error("the rebuilt manifest.json is not the one the epoch recorded");
    const auto j = nlohmann::json::parse(m->bytes.begin(), m->bytes.end(), nullptr, false);
    if (j.is_discarded()) return Error("the rebuilt manifest.json is not JSON");
    TRY(check_manifest_seal(j, SealPolicy{key, false}, "the rebuilt manifest.json"));
    TRY_ASSIGN(auto manifest, manifest_from_json(j));
    if (manifest.id != t.id || manifest.memory.size != t.memory_bytes)
        return Error("the rebuilt manifest.json describes another checkpoint");
    if (!manifest.disks.empty()) return Error("the checkpoint has disks, whose layers parity does not protect");
    manifest.parent.reset();
    manifest.depth = 0;
    manifest.memory.full = true;
    manifest.memory.page_map.reset();
    manifest.stats["rebuilt_from_parity"] = true;
    return manifest;
}

// Returns the checksums a checkpoint manifest keeps (memory_hash.hpp).
Result<std::vector<std::optional<uint64_t>>> write_memory(const std::string& path, const RebuildTarget& t,
                                                          const std::vector<uint64_t>& hashes,
                                                          const std::function<Result<std::vector<uint8_t>>(uint64_t)>& chunk)
{
    std::vector<std::optional<uint64_t>> checksums;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd.valid()) return errno_error("creating " + path);
    if (::ftruncate(fd.get(), static_cast<off_t>(t.memory_bytes)) < 0) return errno_error("sizing " + path);
    for (uint64_t c = 0; c < t.memory_bytes / kChunkSize; ++c) {
        TRY_ASSIGN(const auto bytes, chunk(c));
        if (bytes.size() < kChunkSize || digest_of({bytes.data(), kChunkSize}) != hashes[c])
            return Error("rebuilt memory chunk " + std::to_string(c) + " does not match its checksum (a bad parity or image chunk)");
        checksums.push_back(chunk_hash({bytes.data(), kChunkSize}));
        if (all_zero(bytes)) continue;  // a hole, as checkpoints keep zeros
        TRY(write_all_at(fd.get(), bytes.data(), kChunkSize, c * kChunkSize, path));
    }
    if (::fsync(fd.get()) < 0) return errno_error("syncing " + path);
    return checksums;
}

}  // namespace

Result<uint64_t> write_rebuilt_checkpoint(const std::string& root, const RebuildTarget& t,
                                          const std::function<Result<std::vector<uint8_t>>(uint64_t)>& chunk,
                                          const SealKey& key)
{
    if (t.memory_bytes % kChunkSize != 0 || t.image_bytes > ProtectedImage::max_length(t.memory_bytes))
        return Error("the epoch records an image of " + std::to_string(t.image_bytes) + " bytes with " +
                     std::to_string(t.memory_bytes) + " of memory");
    const uint64_t memory_chunks = t.memory_bytes / kChunkSize;
    const uint64_t side_at = t.memory_bytes + ProtectedImage::hash_region_bytes(memory_chunks);
    if (t.image_bytes < side_at) return Error("the epoch records an image shorter than its memory and checksums");
    TRY_ASSIGN(const auto tail, image_range(chunk, t.memory_bytes, t.image_bytes));
    std::vector<uint64_t> hashes(memory_chunks);
    for (uint64_t c = 0; c < memory_chunks; ++c) hashes[c] = load_le<uint64_t>(tail.data() + 8 * c);
    if (digest_of_hashes(hashes) != t.memory_hashes_xxh3)
        return Error("the rebuilt memory checksums are not the ones the epoch recorded (a bad parity or image chunk)");
    TRY_ASSIGN(const auto files,
               unpack_side_files({tail.data() + (side_at - t.memory_bytes), tail.size() - (side_at - t.memory_bytes)}));
    TRY_ASSIGN(auto manifest, full_manifest(files, t, key));

    TRY(prepare_root(root));
    const std::string tmp = root + "/.tmp-" + t.id + "-" + std::to_string(::getpid());
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp, ec);
    if (ec) return Error("cannot create " + tmp + ": " + ec.message());
    auto written = [&]() -> Result<uint64_t> {
        TRY_ASSIGN(manifest.memory.chunks, write_memory(tmp + "/" + manifest.memory.file, t, hashes, chunk));
        for (const auto& f : files)
            if (f.name != "manifest.json") TRY(write_durable(tmp, f.name, f.bytes));
        auto j = to_json(manifest);
        seal_manifest(j, key);
        const std::string text = j.dump(1) + "\n";
        const std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(text.data()), text.size());
        TRY(write_durable(tmp, "manifest.json", bytes));
        TRY(publish(tmp, root, t.id));
        return digest_of(bytes);
    }();
    if (!written) fs::remove_all(tmp, ec);
    return written;
}

}  // namespace vvmm::ckpt
