#include "coord/lost_nodes.hpp"

#include <algorithm>
#include <set>

#include "coord/parity_roles.hpp"

namespace vvmm::coord {
namespace {

std::string joined(const std::vector<std::string>& items)
{
    std::string out;
    for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
    return out;
}

bool is_lost(const std::vector<std::string>& lost, const std::string& node)
{
    return std::find(lost.begin(), lost.end(), node) != lost.end();
}

Result<void> check_lost(const ClusterConfig& config, const std::vector<std::string>& lost)
{
    for (const auto& n : lost)
        if (!config.node(n)) return Error("--lost: no node '" + n + "' in " + config.file.string());
    size_t survivors = 0;
    for (const auto& n : config.nodes) survivors += !is_lost(lost, n.name) && !config.vms_on(n.name).empty();
    if (survivors == 0) return Error("--lost: no node with VMs survives to restore on");
    return ok();
}

// The surviving node with the fewest VMs, ties in file order.
std::string least_loaded(const ClusterConfig& config, const std::vector<std::string>& lost)
{
    std::string best;
    size_t fewest = SIZE_MAX;
    for (const auto& n : config.nodes) {
        const size_t count = config.vms_on(n.name).size();
        if (is_lost(lost, n.name) || count == 0 || count >= fewest) continue;
        best = n.name;
        fewest = count;
    }
    return best;
}

}  // namespace

std::string unreachable_hint(const ClusterConfig& config, const std::vector<std::string>& waiting,
                             const std::vector<std::string>& connected)
{
    std::vector<std::string> vms, nodes;
    for (const auto& vm : waiting) {
        const VmEntry* entry = config.vm(vm);
        if (!entry || std::find(connected.begin(), connected.end(), vm) != connected.end()) continue;
        vms.push_back(vm + " on " + entry->node);
        if (!is_lost(nodes, entry->node)) nodes.push_back(entry->node);
    }
    if (vms.empty()) return "";
    std::string hint = "; no connection to " + joined(vms);
    if (!config.parity) return hint;
    std::string flags;
    for (const auto& n : nodes) flags += " --lost " + n;
    return hint + ": if " + joined(nodes) + (nodes.size() == 1 ? " is" : " are") +
           " gone, stop and restore every surviving node with" + flags + " (their VMs are rebuilt from parity)";
}

Result<Relocated> relocate_lost(const ClusterConfig& config, const std::vector<std::string>& lost)
{
    TRY(check_lost(config, lost));
    Relocated r{config, {}, ""};
    ClusterConfig& c = r.config;
    for (auto& v : c.vms) {
        if (!is_lost(lost, v.node)) continue;
        const std::string to = least_loaded(c, lost);
        uint16_t highest = 0;
        bool clash = false;
        for (const auto* other : c.vms_on(to)) {
            highest = std::max(highest, other->port);
            clash |= other->port == v.port;
        }
        if (clash) {
            if (highest == UINT16_MAX) return Error("--lost: no free port on " + to + " for " + v.name);
            v.port = static_cast<uint16_t>(highest + 1);
        }
        r.moved.push_back(v.name + " -> " + to + (clash ? " (port " + std::to_string(v.port) + ")" : ""));
        v.node = to;
    }
    if (c.parity) {
        auto layout = parity_layout_of(c);
        if (layout) {
            c.parity = std::move(layout).value();
        } else {
            c.parity.reset();
            r.unprotected = layout.error().message();
        }
    }
    return r;
}

Result<std::vector<SetRebuild>> plan_rebuild(const ClusterConfig& original, const ClusterManifest& epoch,
                                             const std::vector<std::string>& lost)
{
    TRY(check_lost(original, lost));
    std::vector<std::string> lost_vms;
    for (const auto& v : original.vms)
        if (is_lost(lost, v.node)) lost_vms.push_back(v.name);
    if (lost_vms.empty()) return std::vector<SetRebuild>{};
    const std::string which = "epoch " + std::to_string(epoch.epoch);
    if (!original.parity)
        return Error(joined(lost_vms) + " ran on the lost node(s) and no parity protects them (redundancy \"" +
                     original.redundancy.name() + "\", storage \"" + (original.storage == CheckpointStorage::memory ? "memory" : "disk") + "\")");
    if (epoch.parity.empty()) return Error(which + " was taken without parity: " + joined(lost_vms) + " cannot be rebuilt");
    std::vector<SetRebuild> plan;
    const auto& sets = original.parity->sets;
    for (uint32_t s = 0; s < sets.size(); ++s) {
        SetRebuild r;
        r.set = s;
        r.members = static_cast<unsigned>(sets[s].members.size());
        std::vector<std::string> survivors;
        for (unsigned m = 0; m < r.members; ++m) {
            const std::string& vm = sets[s].members[m];
            if (is_lost(lost, original.vm(vm)->node)) {
                r.lost.push_back(m);
                r.lost_vms.push_back(vm);
            } else {
                r.sources.push_back({vm, false, m});
            }
        }
        if (r.lost.empty()) continue;
        const auto blocks = parity_keepers(original, s);
        std::vector<std::string> gone;
        for (unsigned j = 0; j < blocks.size(); ++j) {
            const std::string& node = sets[s].parity_nodes[j];
            const bool recorded = std::any_of(epoch.parity.begin(), epoch.parity.end(), [&](const EpochParityBlock& b) {
                return b.set == s && b.index == j && b.holder == blocks[j];
            });
            if (is_lost(lost, node) || !recorded) {
                gone.push_back(node);
                continue;
            }
            if (r.parity_used.size() < r.lost.size()) {
                r.parity_used.push_back(j);
                r.sources.push_back({blocks[j], true, j});
            }
        }
        if (r.parity_used.size() < r.lost.size())
            return Error(which + ": parity set " + std::to_string(s) + " (" + joined(sets[s].members) + ") lost " +
                         joined(r.lost_vms) + (gone.empty() ? "" : " and its parity on " + joined(gone)) + ": its " +
                         std::to_string(blocks.size() - gone.size()) + " surviving parity block(s) can rebuild at most " +
                         std::to_string(blocks.size() - gone.size()) + " lost member(s)");
        plan.push_back(std::move(r));
    }
    return plan;
}

}  // namespace vvmm::coord
