#include "ckpt/disk_chains.hpp"

#include <filesystem>

#include "ckpt/checkpoint_dir.hpp"
#include "devices/disk_image.hpp"

namespace vvmm::ckpt {

Result<std::vector<DiskLayers>> link_disk_layers(const std::vector<dev::ChainDescription>& chains,
                                                 const std::string& dir)
{
    std::vector<DiskLayers> disks;
    for (size_t d = 0; d < chains.size(); ++d) {
        DiskLayers layers{chains[d].base.path, chains[d].size, chains[d].base_mtime_ns, {}};
        for (const auto& layer : chains[d].layers) {
            const std::string name =
                "disk" + std::to_string(d) + "-" + std::filesystem::path(layer.data_path).filename().string();
            TRY(link_into(layer.data_path, dir, name));
            TRY(link_into(layer.map_path, dir, name + ".map"));
            layers.layers.push_back(name);
        }
        disks.push_back(std::move(layers));
    }
    return disks;
}

Result<std::vector<dev::ChainDescription>> restored_disk_chains(const Manifest& m, const std::string& dir)
{
    // manifest_from_json checks this too; kept because the loop indexes both.
    if (m.disks.size() != m.vm.disks.size()) return Error("disk layers do not match the VM's disks");
    std::vector<dev::ChainDescription> chains;
    for (size_t i = 0; i < m.disks.size(); ++i) {
        dev::ChainDescription d;
        d.base = m.vm.disks[i];
        d.base.path = m.disks[i].base;
        d.size = m.disks[i].base_size;
        d.base_mtime_ns = m.disks[i].base_mtime_ns;
        for (const auto& name : m.disks[i].layers) d.layers.push_back({dir + "/" + name, dir + "/" + name + ".map"});
        chains.push_back(std::move(d));
    }
    return chains;
}

}  // namespace vvmm::ckpt
