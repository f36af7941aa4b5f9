#include "ckpt/checkpoint_loader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/memory_hash.hpp"
#include "ckpt/memory_image_writer.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::ckpt {
namespace {

constexpr uint64_t kMaxStateBytes = 256ull << 20;

// The files of a checkpoint whose manifest was read and checked.
Result<ChainLink> open_link(const std::string& dir, Manifest manifest)
{
    ChainLink link;
    link.dir = dir;
    link.manifest = std::move(manifest);
    const auto& mem = link.manifest.memory;
    const std::string path = dir + "/" + mem.file;
    TRY_ASSIGN(link.memory_fd, open_no_symlink(path, O_RDONLY, "memory image"));
    struct stat st {};
    if (::fstat(link.memory_fd.get(), &st) < 0) return errno_error("stat " + path);
    if (!S_ISREG(st.st_mode)) return Error(path + " is not a regular file");
    if (static_cast<uint64_t>(st.st_size) != mem.size)
        return Error(path + " is " + std::to_string(st.st_size) + " bytes, the manifest says " + std::to_string(mem.size) +
                     " (truncated?)");
    if (!mem.full) {
        TRY_ASSIGN(auto bytes, read_verified(dir, *mem.page_map, mem.size / kPageSize / 8));
        Bitmap pages(mem.size / kPageSize);
        std::memcpy(pages.words().data(), bytes.data(), std::min(bytes.size(), pages.words().size() * 8));
        link.pages = std::move(pages);
    }
    // A chunk that holds pages of this image must have a checksum.
    for (uint64_t c = 0; c < mem.chunks.size(); ++c) {
        const bool has_pages = !link.pages || link.pages->any_in(c * kPagesPerChunk, kPagesPerChunk);
        if (has_pages && link.pages && !mem.chunks[c]) return Error(dir + ": chunk " + std::to_string(c) + " has no checksum");
    }
    return link;
}

}  // namespace

Result<LoadedCheckpoint> load_checkpoint(const std::string& dir_in, const SealPolicy& policy)
{
    std::string dir = dir_in;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) return Error("no checkpoint at " + dir);
    LoadedCheckpoint lc;
    lc.dir = dir;
    TRY_ASSIGN(lc.manifest, read_manifest(dir, policy));
    // Page maps and chunk tables are sized by the VM's memory: a VM this
    // host cannot back is refused before any of them is read.
    TRY(vmm::check_host_can_back(lc.manifest.vm.mem_bytes, vmm::host_ram_plus_swap()));
    TRY_ASSIGN(auto first, open_link(dir, lc.manifest));
    TRY_ASSIGN(auto state, read_verified(dir, lc.manifest.state, kMaxStateBytes));
    TRY_ASSIGN(lc.sections, decode_state(state));
    lc.chain.push_back(std::move(first));
    const std::string root = std::filesystem::path(dir).parent_path().string();
    while (lc.chain.back().manifest.parent) {
        const Manifest& child = lc.chain.back().manifest;
        if (lc.chain.size() > kMaxChainDepthLoad) return Error(dir + ": chain of parents is too long (a loop?)");
        const std::string parent_dir = (root.empty() ? "." : root) + "/" + *child.parent;
        // The parent is a sibling directory, not a link to somewhere else.
        struct stat st {};
        if (::lstat(parent_dir.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
            return Error(parent_dir + " (the parent of " + lc.chain.back().dir +
                         ") is a symbolic link, which a checkpoint may not hold; refused");
        auto pm = read_manifest(parent_dir, policy);
        if (!pm) return pm.error().context("parent of " + lc.chain.back().dir);
        // Same VM, checked before its files are read.
        if (pm->vm.cpus != lc.manifest.vm.cpus || pm->vm.mem_bytes != lc.manifest.vm.mem_bytes ||
            pm->memory.size != lc.manifest.memory.size)
            return Error(parent_dir + " belongs to a different VM than " + dir);
        if (pm->depth + 1 != child.depth) return Error(parent_dir + ": chain depth does not match its child's");
        auto link = open_link(parent_dir, std::move(pm).value());
        if (!link) return link.error().context("parent of " + lc.chain.back().dir);
        lc.chain.push_back(std::move(link).value());
    }
    if (!lc.chain.back().manifest.memory.full) return Error(dir + ": the chain does not end in a full checkpoint");
    return lc;
}

Result<bool> assemble_chunk(const std::vector<ChainLink>& chain, uint64_t c, std::span<uint8_t> out, std::vector<uint8_t>& scratch)
{
    scratch.resize(kChunkSize);
    uint64_t filled[kPagesPerChunk / 64] = {};
    unsigned missing = kPagesPerChunk;
    for (const auto& link : chain) {
        if (missing == 0) break;
        uint64_t need[kPagesPerChunk / 64];
        bool any = false;
        for (unsigned w = 0; w < kPagesPerChunk / 64; ++w) {
            const uint64_t have = link.pages ? link.pages->words()[c * 8 + w] : ~0ull;
            need[w] = have & ~filled[w];
            any |= need[w] != 0;
        }
        if (!any) continue;
        const auto& hash = link.manifest.memory.chunks.at(c);
        // Full images have no checksum for chunks that are not RAM; nothing to read there.
        if (!hash) return Error(link.dir + ": chunk " + std::to_string(c) + " has no checksum");
        size_t done = 0;
        while (done < kChunkSize) {
            const ssize_t n = ::pread(link.memory_fd.get(), scratch.data() + done, kChunkSize - done,
                                      static_cast<off_t>(c * kChunkSize + done));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return errno_error(link.dir + "/memory.img: reading chunk " + std::to_string(c));
            done += static_cast<size_t>(n);
        }
        if (chunk_hash(scratch) != *hash)
            return Error(link.dir + "/memory.img: chunk " + std::to_string(c) + " is corrupted (checksum mismatch)");
        for (unsigned p = 0; p < kPagesPerChunk; ++p) {
            if (!((need[p / 64] >> (p % 64)) & 1)) continue;
            std::memcpy(out.data() + p * kPageSize, scratch.data() + p * kPageSize, kPageSize);
            filled[p / 64] |= 1ull << (p % 64);
            --missing;
        }
    }
    if (missing != 0) return Error("chunk " + std::to_string(c) + " is not covered by the checkpoint chain");
    for (size_t i = 0; i < out.size(); i += kPageSize)
        if (!page_is_zero(out.data() + i)) return false;
    return true;
}

}  // namespace vvmm::ckpt
