// Parity placement for diskless cluster checkpoints (coord/parity_placement):
// every block of a set on its own node, parity spread, impossible layouts
// refused with the numbers.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "coord/parity_placement.hpp"

using namespace vvmm;
using namespace vvmm::coord;

namespace {

PlacementInput cluster(unsigned nodes, const std::vector<unsigned>& vms_per_node, unsigned set_size, unsigned k)
{
    PlacementInput in;
    in.set_size = set_size;
    in.parity_count = k;
    for (unsigned n = 0; n < nodes; ++n) in.nodes.push_back("n" + std::to_string(n));
    for (unsigned n = 0; n < nodes; ++n)
        for (unsigned v = 0; v < vms_per_node[n]; ++v)
            in.vms.emplace_back("vm" + std::to_string(n) + "-" + std::to_string(v), in.nodes[n]);
    return in;
}

// What makes a layout protect against any K lost nodes.
// `even`: every node runs as many VMs, so parity can be spread evenly too.
void check_layout(const PlacementInput& in, const ParityLayout& layout, bool even = true)
{
    std::map<std::string, std::string> node_of(in.vms.begin(), in.vms.end());
    std::multiset<std::string> placed;
    unsigned blocks = 0;
    for (const auto& s : layout.sets) {
        REQUIRE(!s.members.empty());
        CHECK(s.members.size() <= in.set_size);
        CHECK(s.parity_nodes.size() == in.parity_count);
        std::set<std::string> nodes;
        for (const auto& vm : s.members) {
            placed.insert(vm);
            nodes.insert(node_of.at(vm));
        }
        for (const auto& p : s.parity_nodes) nodes.insert(p);
        // Members and parity blocks all on different nodes: K lost nodes lose at most K blocks.
        CHECK(nodes.size() == s.members.size() + in.parity_count);
        blocks += in.parity_count;
    }
    CHECK(placed.size() == in.vms.size());
    CHECK(std::set<std::string>(placed.begin(), placed.end()).size() == in.vms.size());
    unsigned total = 0, most = 0, least = ~0u;
    for (const auto& [node, n] : layout.parity_blocks) {
        total += n;
        most = std::max(most, n);
        least = std::min(least, n);
    }
    CHECK(total == blocks);
    CAPTURE(most);
    CAPTURE(least);
    if (even) CHECK(most <= least + in.parity_count);  // spread: no node holds much more than another
}

}  // namespace

TEST_CASE("parity placement: 4 nodes x 2 VMs with xor in sets of 3; rs:2 on 5 nodes")
{
    auto xor4 = cluster(4, {2, 2, 2, 2}, 3, 1);
    auto layout = place_parity(xor4);
    REQUIRE(layout);
    check_layout(xor4, layout.value());
    CHECK(layout->sets.size() == 3);

    auto rs5 = cluster(5, {2, 2, 2, 2, 2}, 3, 2);
    auto rs = place_parity(rs5);
    REQUIRE(rs);
    check_layout(rs5, rs.value());
    // The same layout on every VMM: a pure function of the input.
    auto again = place_parity(rs5);
    REQUIRE(again);
    for (size_t i = 0; i < rs->sets.size(); ++i) {
        CHECK(rs->sets[i].members == again->sets[i].members);
        CHECK(rs->sets[i].parity_nodes == again->sets[i].parity_nodes);
    }
}

TEST_CASE("parity placement: a layout that cannot be protected is refused with the numbers")
{
    auto r = place_parity(cluster(4, {2, 2, 2, 2}, 4, 1));
    REQUIRE(!r);
    CHECK(r.error().message() ==
          "a parity set of 4 VMs with 1 parity block(s) needs 5 nodes (one per member, one per block); the cluster has 4 "
          "(lower set_size or the redundancy)");
    CHECK(!place_parity(cluster(2, {1, 1}, 1, 2)));
    CHECK(!place_parity(cluster(3, {1, 1, 1}, 0, 1)));
    auto stray = cluster(3, {1, 1, 1}, 2, 1);
    stray.vms.emplace_back("lost", "n9");
    CHECK(place_parity(stray).error().message() == "VM 'lost' is on node 'n9', which is not in the list");
}

TEST_CASE("parity placement: random layouts keep every set's blocks on distinct nodes, and spread parity evenly when the VMs are")
{
    std::mt19937 rng(20261203);
    for (int round = 0; round < 500; ++round) {
        const unsigned k = 1 + rng() % 3;
        const unsigned nodes = k + 1 + rng() % 8;
        std::vector<unsigned> per_node(nodes);
        const bool even = rng() % 2;
        const unsigned same = 1 + rng() % 4;
        for (auto& v : per_node) v = even ? same : rng() % 5;
        const unsigned set_size = 1 + rng() % (nodes - k);
        auto in = cluster(nodes, per_node, set_size, k);
        CAPTURE(nodes);
        CAPTURE(k);
        CAPTURE(set_size);
        auto layout = place_parity(in);
        REQUIRE(layout);
        check_layout(in, layout.value(), even);
    }
}
