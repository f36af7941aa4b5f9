// Restoring a diskless cluster without some of its nodes (issue 12,
// `vvmm restore --cluster c.toml --lost NODE...`): where the lost nodes'
// VMs run now, and how their checkpoints are rebuilt from the survivors'
// images and parity.
#pragma once

#include <string>
#include <vector>

#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::coord {

struct Relocated {
    ClusterConfig config;            // the cluster as it restores
    std::vector<std::string> moved;  // "vm3 -> n1", in file order
    std::string unprotected;         // why later epochs have no parity ("" when they do)
};

// Each VM of a lost node goes to the surviving node with the fewest VMs
// (ties: file order) and keeps its port unless that node already uses it
// (then the node's highest port + 1). Parity is placed again over the
// survivors for the epochs after the restore; when they are too few for
// the redundancy, those epochs are taken without parity (`unprotected`).
// Every restoring node computes the same from the same file and list.
Result<Relocated> relocate_lost(const ClusterConfig& config, const std::vector<std::string>& lost);

// What a restore that waits for VMs it has no connection to tells the user:
// their nodes, and, where parity protects the cluster, how to go on without
// them (`--lost`: the user confirms a node is gone; vvmm never assumes it).
// "" when every VM waited for is connected.
std::string unreachable_hint(const ClusterConfig& config, const std::vector<std::string>& waiting,
                             const std::vector<std::string>& connected);

// One source of a rebuild: a surviving member's image, or a parity block.
struct RebuildSource {
    std::string vm;       // whose VMM sends it
    bool parity = false;
    unsigned index = 0;   // member index in the set, or parity block index
};

// The rebuild of one parity set's lost members.
struct SetRebuild {
    uint32_t set = 0;
    unsigned members = 0;                  // the set's size
    std::vector<unsigned> lost;            // member indices
    std::vector<std::string> lost_vms;     // their VMs, same order
    std::vector<unsigned> parity_used;     // surviving blocks used, as many as lost
    std::vector<RebuildSource> sources;    // every surviving member, then the blocks used
};

// What rebuilds the lost nodes' VMs of `epoch`, from the placement the
// epoch was taken under (`original`, the file as written). An error that
// says which VM cannot be rebuilt and why: no parity, an epoch without
// parity, or more lost in a set than its surviving blocks.
Result<std::vector<SetRebuild>> plan_rebuild(const ClusterConfig& original, const ClusterManifest& epoch,
                                             const std::vector<std::string>& lost);

// The source codes of a PARITY message during a rebuild: member index, or
// the set's size plus the parity block index.
inline unsigned source_code(const SetRebuild& r, const RebuildSource& s) { return s.parity ? r.members + s.index : s.index; }

}  // namespace vvmm::coord
