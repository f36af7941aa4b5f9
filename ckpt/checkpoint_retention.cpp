#include "ckpt/checkpoint_retention.hpp"

#include <unistd.h>

#include <filesystem>
#include <algorithm>
#include <regex>
#include <set>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/manifest.hpp"
#include "vmm/base/small_file.hpp"

namespace vvmm::ckpt {
namespace {

namespace fs = std::filesystem;

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

Result<unsigned> remove_outside_chains(const std::string& root, const std::vector<std::string>& keep,
                                       const SealPolicy& policy)
{
    std::set<std::string> chain;
    for (const auto& id : keep) {
        TRY_ASSIGN(const auto kept, checkpoint_chain(root, id, policy));
        chain.insert(kept.begin(), kept.end());
    }
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
