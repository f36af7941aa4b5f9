// cfg.toml's keys for diskless checkpoints and scheduled epochs (issue 12):
// storage, memory_dir, redundancy, set_size, interval, mtbf, persist_*; the
// parity placement they imply; which VMM starts scheduled epochs, and when.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "coord/cluster_config.hpp"
#include "coord/epoch_schedule.hpp"
#include "coord/parity_roles.hpp"

using namespace vvmm;
using namespace vvmm::coord;

namespace {

// `nodes` nodes n0.., `per_node` VMs on each (vm0 on n0, vm1 on n1, ...,
// round robin), and the [cluster] lines `policy`.
std::string cluster(const std::string& policy, unsigned nodes = 4, unsigned per_node = 2,
                    const std::string& checkpoint_dir = "")
{
    std::ostringstream t;
    t << "[cluster]\nname = \"d\"\nsecret_file = \"k\"\n" << checkpoint_dir << policy << "\n";
    for (unsigned n = 0; n < nodes; ++n) t << "[[node]]\nname = \"n" << n << "\"\naddress = \"10.0.0." << n + 1 << "\"\n";
    for (unsigned v = 0; v < nodes * per_node; ++v)
        t << "[[vm]]\nname = \"vm" << v << "\"\nnode = \"n" << v % nodes << "\"\nport = " << 7100 + v
          << "\nkernel = \"/k\"\nmem = \"" << (v == 0 ? "128M" : "64M") << "\"\n";
    return t.str();
}

Result<ClusterConfig> parse(const std::string& text) { return parse_cluster_config(text, "/t/c.toml", false); }

std::string error_of(const std::string& text)
{
    auto r = parse(text);
    return r.ok() ? std::string("(accepted)") : r.error().message();
}

}  // namespace

TEST_CASE("diskless config: storage = memory puts each node's checkpoints under memory_dir/<node>, xor by default")
{
    auto c = parse(cluster("storage = \"memory\"\nmemory_dir = \"/dev/shm/c1\""));
    REQUIRE_MESSAGE(c.ok(), error_of(cluster("storage = \"memory\"")));
    CHECK(c->storage == CheckpointStorage::memory);
    CHECK(c->node_checkpoint_dir("n2") == "/dev/shm/c1/n2");
    CHECK(c->redundancy.name() == "xor");
    CHECK(c->set_size == 3);  // 4 nodes, one of them for each set's parity
    REQUIRE(c->parity);
    CHECK(c->parity->sets.size() == 3);  // 8 VMs in sets of up to 3
    for (const auto& set : c->parity->sets) {
        REQUIRE(set.parity_nodes.size() == 1);
        for (const auto& m : set.members) CHECK(c->vm(m)->node != set.parity_nodes[0]);
    }
    auto defaulted = parse(cluster("storage = \"memory\""));
    REQUIRE(defaulted.ok());
    CHECK(defaulted->memory_dir == "/dev/shm/vvmm/d");

    auto disk = parse(cluster("", 4, 2, "checkpoint_dir = \"/ck\"\n"));
    REQUIRE(disk.ok());
    CHECK(disk->storage == CheckpointStorage::disk);
    CHECK(disk->node_checkpoint_dir("n1") == "/ck");
    CHECK_FALSE(disk->parity);
}

TEST_CASE("diskless config: rs:2, partner, none and set_size")
{
    auto rs = parse(cluster("storage = \"memory\"\nredundancy = \"rs:2\"\nset_size = 3", 5, 2));
    REQUIRE_MESSAGE(rs.ok(), error_of(cluster("storage = \"memory\"\nredundancy = \"rs:2\"\nset_size = 3", 5, 2)));
    CHECK(rs->redundancy.parity_count == 2);
    for (const auto& set : rs->parity->sets) CHECK(set.parity_nodes.size() == 2);

    auto partner = parse(cluster("storage = \"memory\"\nredundancy = \"partner\"", 2, 1));
    REQUIRE(partner.ok());
    CHECK(partner->set_size == 1);
    CHECK(partner->parity->sets.size() == 2);
    CHECK(partner->parity->sets[0].parity_nodes == std::vector<std::string>{"n1"});

    auto none = parse(cluster("storage = \"memory\"\nredundancy = \"none\""));
    REQUIRE(none.ok());
    CHECK_FALSE(none->parity);
}

TEST_CASE("diskless config: layouts that cannot be protected and misplaced keys are one clear line each")
{
    CHECK(error_of(cluster("storage = \"memory\"\nset_size = 4")) ==
          "/t/c.toml:5:12: redundancy \"xor\": a parity set of 4 VMs with 1 parity block(s) needs 5 nodes (one per "
          "member, one per block); the cluster has 4 (lower set_size or the redundancy)");
    CHECK(error_of(cluster("storage = \"memory\"\nredundancy = \"rs:2\"", 2, 1)).find("needs 3 nodes") != std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\nredundancy = \"rs:5\"")).find("unknown redundancy 'rs:5'") != std::string::npos);
    CHECK(error_of(cluster("storage = \"tape\"")).find("unknown storage 'tape'") != std::string::npos);
    CHECK(error_of(cluster("redundancy = \"xor\"", 4, 2, "checkpoint_dir = \"/ck\"\n"))
              .find("'redundancy' applies to storage = \"memory\" only") != std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"", 4, 2, "checkpoint_dir = \"/ck\"\n"))
              .find("checkpoint_dir is for storage = \"disk\"") != std::string::npos);
    CHECK(error_of(cluster("")).find("missing required key 'checkpoint_dir'") != std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\nredundancy = \"partner\"\nset_size = 2"))
              .find("set_size does not go with redundancy = \"partner\"") != std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\npersist_every = 10")).find("persist_every needs persist_dir") !=
          std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\nset_size = 0")).find("set_size 0 is out of range") != std::string::npos);
    // A node without VMs has no VMM to keep parity: 5 nodes, 4 of them with VMs.
    std::string idle_node = cluster("storage = \"memory\"\nset_size = 4") + "[[node]]\nname = \"n9\"\naddress = \"10.0.0.9\"\n";
    CHECK(error_of(idle_node).find("needs 5 nodes (one per member, one per block); the cluster has 4 (lower set_size or "
                                   "the redundancy) (nodes without VMs hold no parity: n9)") != std::string::npos);
}

TEST_CASE("diskless config: interval fixed or auto (which needs mtbf)")
{
    auto fixed = parse(cluster("storage = \"memory\"\ninterval = \"30s\""));
    REQUIRE(fixed.ok());
    CHECK(fixed->schedule.kind == EpochSchedule::Kind::fixed);
    CHECK(fixed->schedule.interval.count() == 30);
    auto iv = epoch_interval(*fixed, {});
    REQUIRE(iv);
    CHECK(iv->interval.count() == 30);

    CHECK(error_of(cluster("storage = \"memory\"\ninterval = \"auto\"")).find("interval = \"auto\" needs mtbf") !=
          std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\ninterval = \"soon\"")).find("(or \"auto\")") != std::string::npos);
    CHECK(error_of(cluster("storage = \"memory\"\ninterval = \"0.5s\"")).find("shorter than 1s") != std::string::npos);

    auto automatic = parse(cluster("storage = \"memory\"\ninterval = \"auto\"\nmtbf = \"24h\""));
    REQUIRE(automatic.ok());
    CHECK(automatic->mtbf->count() == 86400);
    // Daly's check value: δ = 5 min, M = 24 h → about 117 min; the median of the window counts.
    auto daly = epoch_interval(*automatic, {Seconds(1), Seconds(300), Seconds(300), Seconds(300), Seconds(900)});
    REQUIRE(daly);
    CHECK(daly->interval.count() / 60 == doctest::Approx(117).epsilon(0.01));
    CHECK(daly->why.find("median of the last 5") != std::string::npos);
    auto unmeasured = epoch_interval(*automatic, {});
    REQUIRE(unmeasured);
    CHECK(unmeasured->why.find("not measured yet") != std::string::npos);

    auto on_request = parse(cluster("storage = \"memory\""));
    REQUIRE(on_request.ok());
    CHECK_FALSE(epoch_interval(*on_request, {}));
}

TEST_CASE("scheduled epochs: the first live VM in file order starts them; the next takes over")
{
    auto c = parse(cluster("storage = \"memory\"\ninterval = \"10s\"", 3, 1));
    REQUIRE(c.ok());
    CHECK(starts_scheduled_epochs(*c, "vm0", {"vm1", "vm2"}));
    CHECK_FALSE(starts_scheduled_epochs(*c, "vm1", {"vm0", "vm2"}));
    CHECK(starts_scheduled_epochs(*c, "vm1", {"vm2"}));  // vm0 is gone
    CHECK_FALSE(starts_scheduled_epochs(*c, "vm2", {"vm1"}));
    CHECK_FALSE(starts_scheduled_epochs(*c, "vm9", {}));  // not in the cluster
}

TEST_CASE("parity roles: every VM sends to its set's holders; each block has exactly one keeper, never a member")
{
    auto c = parse(cluster("storage = \"memory\"\nredundancy = \"rs:2\"\nset_size = 3", 5, 2));
    REQUIRE(c.ok());
    std::map<std::pair<uint32_t, unsigned>, std::string> keepers;
    for (const auto& v : c->vms)
        for (const auto& block : held_parity_blocks(*c, v.name)) {
            CHECK(keepers.emplace(std::make_pair(block.set, block.parity_index), v.name).second);
            CHECK(std::find(block.members.begin(), block.members.end(), v.name) == block.members.end());
            // The keeper's node hosts no member of the set.
            for (const auto& m : block.members) CHECK(c->vm(m)->node != v.node);
        }
    size_t blocks = 0;
    for (const auto& set : c->parity->sets) blocks += set.parity_nodes.size();
    CHECK(keepers.size() == blocks);
    for (const auto& v : c->vms) {
        auto m = parity_membership(*c, v.name);
        REQUIRE(m);
        CHECK(c->parity->sets[m->set].members[m->member] == v.name);
        REQUIRE(m->holders.size() == 2);
        for (unsigned j = 0; j < 2; ++j) CHECK(keepers.at({m->set, j}) == m->holders[j]);
    }
    auto none = parse(cluster("storage = \"memory\"\nredundancy = \"none\""));
    REQUIRE(none.ok());
    CHECK_FALSE(parity_membership(*none, "vm0"));
    CHECK(held_parity_blocks(*none, "vm0").empty());
}
