#include "coord/parity_roles.hpp"

#include <algorithm>

#include "ckpt/protected_image.hpp"

namespace vvmm::coord {
namespace {

// The VMM that keeps a node's parity blocks.
std::string keeper_of(const ClusterConfig& config, const std::string& node)
{
    const auto vms = config.vms_on(node);
    return vms.empty() ? std::string() : vms.front()->name;
}

}  // namespace

std::optional<ParityMembership> parity_membership(const ClusterConfig& config, const std::string& vm)
{
    if (!config.parity) return std::nullopt;
    const auto& sets = config.parity->sets;
    for (uint32_t s = 0; s < sets.size(); ++s) {
        const auto& members = sets[s].members;
        const auto at = std::find(members.begin(), members.end(), vm);
        if (at == members.end()) continue;
        return ParityMembership{s, static_cast<uint16_t>(at - members.begin()), static_cast<unsigned>(members.size()),
                                parity_keepers(config, s)};
    }
    return std::nullopt;
}

std::string parity_block_dir(const std::string& node_root, uint32_t set, unsigned index)
{
    return node_root + "/parity/" + std::to_string(set) + ".p" + std::to_string(index);
}

uint64_t longest_image_of(const ClusterConfig& config, const std::vector<std::string>& members)
{
    uint64_t longest = 0;
    for (const auto& name : members)
        if (const VmEntry* vm = config.vm(name)) longest = std::max(longest, ckpt::ProtectedImage::max_length(vm->machine.mem_bytes));
    return longest;
}

uint64_t longest_image_of_set(const ClusterConfig& config, uint32_t set)
{
    if (!config.parity || set >= config.parity->sets.size()) return 0;
    return longest_image_of(config, config.parity->sets[set].members);
}

Result<ckpt::ParityCodec> parity_codec_for(const ClusterConfig& config, unsigned members)
{
    const auto kind = config.redundancy.kind == Redundancy::Kind::reed_solomon ? ckpt::ParityCodec::Kind::reed_solomon
                                                                                : ckpt::ParityCodec::Kind::xor_parity;
    return ckpt::ParityCodec::create(kind, members, config.redundancy.parity_count);
}

std::vector<std::string> parity_keepers(const ClusterConfig& config, uint32_t set)
{
    std::vector<std::string> out;
    if (!config.parity || set >= config.parity->sets.size()) return out;
    for (const auto& node : config.parity->sets[set].parity_nodes) out.push_back(keeper_of(config, node));
    return out;
}

std::vector<HeldBlock> held_parity_blocks(const ClusterConfig& config, const std::string& vm)
{
    std::vector<HeldBlock> out;
    if (!config.parity) return out;
    const auto& sets = config.parity->sets;
    for (uint32_t s = 0; s < sets.size(); ++s)
        for (unsigned j = 0; j < sets[s].parity_nodes.size(); ++j)
            if (keeper_of(config, sets[s].parity_nodes[j]) == vm) out.push_back({s, j, sets[s].members});
    return out;
}

Result<void> check_epoch_parity(const ClusterConfig& config, const std::vector<EpochVm>& vms,
                                const std::vector<EpochParityBlock>& blocks)
{
    if (!config.parity) return ok();
    const auto& sets = config.parity->sets;
    for (const auto& v : vms)
        if (parity_membership(config, v.name) && v.image_bytes == 0) return Error(v.name + " sent no parity");
    size_t expected = 0;
    for (uint32_t s = 0; s < sets.size(); ++s)
        for (unsigned j = 0; j < sets[s].parity_nodes.size(); ++j, ++expected) {
            const std::string keeper = keeper_of(config, sets[s].parity_nodes[j]);
            const auto n = std::count_if(blocks.begin(), blocks.end(), [&](const EpochParityBlock& b) {
                return b.set == s && b.index == j && b.holder == keeper;
            });
            if (n != 1)
                return Error("parity set " + std::to_string(s) + " block " + std::to_string(j) + " was not finished by " + keeper);
        }
    if (blocks.size() != expected) return Error("the holders reported parity blocks the placement does not have");
    return ok();
}

}  // namespace vvmm::coord
