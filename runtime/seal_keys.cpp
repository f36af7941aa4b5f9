#include "runtime/seal_keys.hpp"

#include "vmm/sandbox.hpp"

namespace vvmm::runtime {

SealKeySource seal_key_source(const std::optional<ClusterRole>& cluster, const std::string& key_file, bool create)
{
    if (cluster) {
        ckpt::SealKey key = ckpt::cluster_seal_key(cluster->secret, cluster->config.name);
        return [key] { return Result<ckpt::SealKey>(key); };
    }
    return [key_file, create]() -> Result<ckpt::SealKey> {
        std::string path = key_file;
        if (path.empty()) {
            TRY_ASSIGN(path, ckpt::default_key_path());
        }
        return ckpt::load_key_file(path, create);
    };
}

Result<SealKeySource> seal_key_for_session(const std::optional<ClusterRole>& cluster, const std::string& key_file,
                                           const std::string& checkpoint_dir,
                                           const std::optional<ckpt::SealKey>& loaded)
{
    auto source = seal_key_source(cluster, key_file, true);
    if (cluster || checkpoint_dir.empty() || !vmm::sandbox_enabled()) return source;
    ckpt::SealKey key;
    if (loaded) {
        key = *loaded;
    } else {
        TRY_ASSIGN(key, source());
    }
    return SealKeySource([key] { return Result<ckpt::SealKey>(key); });
}

}  // namespace vvmm::runtime
