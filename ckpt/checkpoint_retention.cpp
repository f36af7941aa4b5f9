#include "ckpt/checkpoint_retention.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <regex>
#include <set>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/manifest.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {
namespace {

namespace fs = std::filesystem;

// Copies the data of `src` into the new file `dst`, leaving holes where the
// source has them, and fsyncs it.
Result<uint64_t> copy_sparse_file(const std::string& src, const std::string& dst)
{
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!in.valid()) return errno_error("opening " + src);
    struct stat st {};
    if (::fstat(in.get(), &st) < 0) return errno_error("stat " + src);
    if (!S_ISREG(st.st_mode)) return Error(src + " is not a regular file");
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out.valid()) return errno_error("creating " + dst);
    if (::ftruncate(out.get(), st.st_size) < 0) return errno_error("sizing " + dst);
    uint64_t copied = 0;
    off_t pos = 0;
    while (pos < st.st_size) {
        const off_t data = ::lseek(in.get(), pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole is left
            return errno_error("seeking in " + src);
        }
        off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
        if (hole < 0) hole = st.st_size;
        off_t from = data, to = data;
        while (from < hole) {
            const ssize_t n = ::copy_file_range(in.get(), &from, out.get(), &to, static_cast<size_t>(hole - from), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) return errno_error("copying " + src + " to " + dst);
            copied += static_cast<uint64_t>(n);
        }
        pos = hole;
    }
    if (::fsync(out.get()) < 0) return errno_error("fsync " + dst);
    return copied;
}

Result<uint64_t> copy_checkpoint(const std::string& src, const std::string& dst_root, const std::string& id)
{
    const std::string tmp = dst_root + "/.tmp-" + id + "-" + std::to_string(::getpid());
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directories(tmp, ec);
    if (ec) return Error("cannot create " + tmp + ": " + ec.message());
    uint64_t bytes = 0;
    auto copy_all = [&]() -> Result<void> {
        for (fs::directory_iterator it(src, ec), end; !ec && it != end; it.increment(ec)) {
            TRY_ASSIGN(const uint64_t n, copy_sparse_file(it->path().string(), tmp + "/" + it->path().filename().string()));
            bytes += n;
        }
        if (ec) return Error("cannot list " + src + ": " + ec.message());
        return publish(tmp, dst_root, id);
    };
    if (auto r = copy_all(); !r) {
        fs::remove_all(tmp, ec);
        return r.error();
    }
    return bytes;
}

}  // namespace

Result<std::vector<std::string>> checkpoint_chain(const std::string& root, const std::string& id, const SealPolicy& policy)
{
    std::vector<std::string> chain;
    for (std::optional<std::string> at = id; at;) {
        if (chain.size() > kMaxChainDepthLoad || std::find(chain.begin(), chain.end(), *at) != chain.end())
            return Error("checkpoint " + id + " in " + root + " has a chain that does not end");
        TRY_ASSIGN(auto m, read_manifest(root + "/" + *at, policy));
        chain.push_back(*at);
        at = m.parent;
    }
    return chain;
}

Result<unsigned> remove_outside_chain(const std::string& root, const std::string& keep, const SealPolicy& policy)
{
    TRY_ASSIGN(const auto kept, checkpoint_chain(root, keep, policy));
    const std::set<std::string> chain(kept.begin(), kept.end());
    static const std::regex id_name(R"(\d{6})");
    std::vector<fs::path> doomed;
    std::error_code ec;
    for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (std::regex_match(name, id_name) && !chain.contains(name)) doomed.push_back(it->path());
    }
    if (ec) return Error("cannot list " + root + ": " + ec.message());
    for (const auto& path : doomed) {
        fs::remove_all(path, ec);
        if (ec) return Error("cannot remove " + path.string() + ": " + ec.message());
    }
    return static_cast<unsigned>(doomed.size());
}

Result<uint64_t> copy_chain(const std::string& src_root, const std::string& id, const std::string& dst_root,
                            const SealPolicy& policy)
{
    TRY_ASSIGN(const auto chain, checkpoint_chain(src_root, id, policy));
    TRY(prepare_root(dst_root));
    uint64_t bytes = 0;
    // Oldest first: a copied checkpoint's parent is always there before it.
    for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        const std::string src = src_root + "/" + *it, dst = dst_root + "/" + *it;
        std::error_code ec;
        if (fs::exists(fs::symlink_status(dst, ec))) {
            TRY_ASSIGN(auto a, read_small_file(src + "/manifest.json", 16 << 20, "checkpoint manifest", Symlinks::refuse));
            TRY_ASSIGN(auto b, read_small_file(dst + "/manifest.json", 16 << 20, "checkpoint manifest", Symlinks::refuse));
            if (a != b) return Error(dst + " holds another checkpoint than " + src + " (a different run?); not copied");
            continue;
        }
        TRY_ASSIGN(const uint64_t n, copy_checkpoint(src, dst_root, *it));
        bytes += n;
    }
    return bytes;
}

}  // namespace vvmm::ckpt
