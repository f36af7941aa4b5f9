// Where a diskless cluster's parity goes (issue 12, DVDC): the VMs are
// grouped into parity sets whose members run on distinct nodes, and each
// set's K parity blocks go to K other nodes, none hosting a member of the
// set, so losing any K nodes loses at most K blocks of any set. Parity load
// is spread RAID-5-like: each set's parity goes to the eligible nodes that
// hold the least parity so far (ties: the next nodes after the last set's).
// A pure function of the cluster layout, so every VMM computes the same one.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::coord {

struct PlacementInput {
    std::vector<std::string> nodes;                         // in cluster-file order
    std::vector<std::pair<std::string, std::string>> vms;   // (VM, its node), in cluster-file order
    unsigned set_size = 4;     // members per set, at most
    unsigned parity_count = 1; // K: 1 for xor, K for rs:K
};

struct ParitySet {
    std::vector<std::string> members;       // VM names, on distinct nodes
    std::vector<std::string> parity_nodes;  // K nodes, none hosting a member
};

struct ParityLayout {
    std::vector<ParitySet> sets;
    std::map<std::string, unsigned> parity_blocks;  // per node: how many sets' parity it holds
};

// Refuses, with the numbers, a layout that cannot be protected: a set of
// set_size members plus K parity nodes needs set_size + K nodes.
Result<ParityLayout> place_parity(const PlacementInput& input);

}  // namespace vvmm::coord
