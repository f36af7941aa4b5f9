// Who does what for a diskless cluster's parity (issue 12), from the
// placement: each VM is a member of one set and sends its changes to that
// set's holders; each parity block is held by one VMM, the first VM in file
// order on the block's node (a node's VMMs are alike; one must keep it).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "ckpt/parity_codec.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"

namespace vvmm::coord {

struct ParityMembership {
    uint32_t set = 0;
    uint16_t member = 0;                // index in the set
    unsigned members = 0;               // the set's size
    std::vector<std::string> holders;   // VM (VMM) per parity block, block order
};

struct HeldBlock {
    uint32_t set = 0;
    unsigned parity_index = 0;
    std::vector<std::string> members;   // the set's VMs, member order
};

// nullopt when the cluster has no parity or `vm` is in no set.
std::optional<ParityMembership> parity_membership(const ClusterConfig& config, const std::string& vm);
// The VM whose VMM keeps each of set `set`'s parity blocks, block order.
std::vector<std::string> parity_keepers(const ClusterConfig& config, uint32_t set);
// The blocks `vm`'s VMM holds (none for most VMs).
std::vector<HeldBlock> held_parity_blocks(const ClusterConfig& config, const std::string& vm);
// Where a node keeps set `set`'s parity block `index`: <node root>/parity/<set>.p<index>.
std::string parity_block_dir(const std::string& node_root, uint32_t set, unsigned index);
// The codec of a set of `members` VMs for the cluster's redundancy.
Result<ckpt::ParityCodec> parity_codec_for(const ClusterConfig& config, unsigned members);
// The longest protected image a member of the set can have (its RAM as
// configured): bounds what a holder or a rebuild accepts.
uint64_t longest_image_of(const ClusterConfig& config, const std::vector<std::string>& members);
uint64_t longest_image_of_set(const ClusterConfig& config, uint32_t set);

// Whether an epoch's DONEs protect every VM: each member sent its changes,
// each block of the placement was finished once, by its keeper.
Result<void> check_epoch_parity(const ClusterConfig& config, const std::vector<EpochVm>& vms,
                                const std::vector<EpochParityBlock>& blocks);

}  // namespace vvmm::coord
