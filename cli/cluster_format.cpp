#include "cli/cluster_format.hpp"

#include <algorithm>
#include <map>

#include "cli/number_format.hpp"

namespace vvmm::cli {
namespace {

using nlohmann::json;

std::string storage_name(const coord::ClusterConfig& c)
{
    return c.storage == coord::CheckpointStorage::memory ? "memory" : "disk";
}

std::string join(const std::vector<std::string>& items)
{
    std::string out;
    for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
    return out;
}

// The RAM of the largest member: a parity block is as long as its longest image.
uint64_t largest_member(const coord::ClusterConfig& c, const coord::ParitySet& set)
{
    uint64_t bytes = 0;
    for (const auto& m : set.members)
        if (const auto* v = c.vm(m)) bytes = std::max(bytes, v->machine.mem_bytes);
    return bytes;
}

}  // namespace

std::string describe_checkpoint_policy(const coord::ClusterConfig& c)
{
    if (c.storage == coord::CheckpointStorage::disk)
        return "storage: disk (" + c.checkpoint_dir.string() + "); no parity\n";
    std::string out = "storage: memory (" + c.memory_dir.string() + "/<node>), redundancy " + c.redundancy.name();
    if (!c.parity) return out + ": a lost node loses its VMs' checkpoints\n";
    out += ", sets of up to " + std::to_string(c.set_size) + " VMs\n";
    for (size_t i = 0; i < c.parity->sets.size(); ++i) {
        const auto& set = c.parity->sets[i];
        out += "  set " + std::to_string(i) + ": " + join(set.members) + "  parity on " + join(set.parity_nodes) + "\n";
    }
    const json memory = memory_per_node(c);
    out += "checkpoint memory per node at most (images + parity, twice while an epoch runs):\n";
    for (const auto& n : c.nodes) {
        const json& m = memory[n.name];
        out += "  " + n.name + "  images " + format_mib(m["images"].get<double>(), 0) + "  parity " +
               format_mib(m["parity"].get<double>(), 0) + "\n";
    }
    return out;
}

json memory_per_node(const coord::ClusterConfig& c)
{
    std::map<std::string, uint64_t> images, parity;
    for (const auto& v : c.vms) images[v.node] += v.machine.mem_bytes;
    if (c.parity)
        for (const auto& set : c.parity->sets)
            for (const auto& n : set.parity_nodes) parity[n] += largest_member(c, set);
    json out = json::object();
    for (const auto& n : c.nodes) out[n.name] = {{"images", images[n.name]}, {"parity", parity[n.name]}};
    return out;
}

json checkpoint_policy_json(const coord::ClusterConfig& c)
{
    json j = {{"storage", storage_name(c)}};
    if (c.storage == coord::CheckpointStorage::disk) {
        j["checkpoint_dir"] = c.checkpoint_dir.string();
        return j;
    }
    j["memory_dir"] = c.memory_dir.string();
    j["redundancy"] = c.redundancy.name();
    if (c.parity) {
        j["set_size"] = c.set_size;
        json sets = json::array();
        for (const auto& s : c.parity->sets) sets.push_back({{"members", s.members}, {"parity_nodes", s.parity_nodes}});
        j["sets"] = sets;
    }
    j["memory_per_node"] = memory_per_node(c);
    return j;
}

}  // namespace vvmm::cli
