#include "coord/parity_placement.hpp"

#include <algorithm>
#include <set>

namespace vvmm::coord {
namespace {

Result<void> check_input(const PlacementInput& in)
{
    if (in.set_size == 0) return Error("set_size must be at least 1");
    if (in.parity_count == 0) return Error("parity needs at least 1 block per set");
    const size_t needed = size_t{in.set_size} + in.parity_count;
    if (in.nodes.size() < needed)
        return Error("a parity set of " + std::to_string(in.set_size) + " VMs with " + std::to_string(in.parity_count) +
                     " parity block(s) needs " + std::to_string(needed) + " nodes (one per member, one per block); " +
                     "the cluster has " + std::to_string(in.nodes.size()) + " (lower set_size or the redundancy)");
    const std::set<std::string> known(in.nodes.begin(), in.nodes.end());
    for (const auto& [vm, node] : in.vms)
        if (!known.contains(node)) return Error("VM '" + vm + "' is on node '" + node + "', which is not in the list");
    return ok();
}

// Each set takes one VM from each of up to set_size nodes, from the nodes
// with the most VMs still unplaced (ties: cluster-file order), so no node is
// left with VMs that could only form sets with themselves.
std::vector<std::vector<std::string>> form_sets(const PlacementInput& in)
{
    std::vector<std::vector<std::string>> waiting(in.nodes.size());  // per node index, in file order
    for (const auto& [vm, node] : in.vms)
        waiting[std::find(in.nodes.begin(), in.nodes.end(), node) - in.nodes.begin()].push_back(vm);
    for (auto& w : waiting) std::reverse(w.begin(), w.end());  // pop_back() takes them in file order
    std::vector<std::vector<std::string>> sets;
    for (;;) {
        std::vector<size_t> order(in.nodes.size());
        for (size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return waiting[a].size() > waiting[b].size(); });
        std::vector<std::string> set;
        for (size_t i : order) {
            if (set.size() == in.set_size || waiting[i].empty()) break;
            set.push_back(waiting[i].back());
            waiting[i].pop_back();
        }
        if (set.empty()) return sets;
        sets.push_back(std::move(set));
    }
}

}  // namespace

Result<ParityLayout> place_parity(const PlacementInput& in)
{
    TRY(check_input(in));
    std::map<std::string, std::string> node_of(in.vms.begin(), in.vms.end());
    ParityLayout layout;
    for (const auto& n : in.nodes) layout.parity_blocks[n] = 0;
    size_t next = 0;  // rotation: where the search for the next set's parity starts
    for (auto& members : form_sets(in)) {
        std::set<std::string> member_nodes;
        for (const auto& vm : members) member_nodes.insert(node_of.at(vm));
        std::vector<std::string> eligible;
        for (size_t i = 0; i < in.nodes.size(); ++i) {
            const std::string& n = in.nodes[(next + i) % in.nodes.size()];
            if (!member_nodes.contains(n)) eligible.push_back(n);
        }
        std::stable_sort(eligible.begin(), eligible.end(),
                         [&](const auto& a, const auto& b) { return layout.parity_blocks[a] < layout.parity_blocks[b]; });
        ParitySet set{std::move(members), {eligible.begin(), eligible.begin() + in.parity_count}};
        for (const auto& n : set.parity_nodes) ++layout.parity_blocks[n];
        const auto last = std::find(in.nodes.begin(), in.nodes.end(), set.parity_nodes.back());
        next = static_cast<size_t>(last - in.nodes.begin() + 1) % in.nodes.size();
        layout.sets.push_back(std::move(set));
    }
    return layout;
}

}  // namespace vvmm::coord
