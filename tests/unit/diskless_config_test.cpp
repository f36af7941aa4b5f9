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
#include "coord/lost_nodes.hpp"
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
    // Parity does not cover disks: a VM with one is refused, unless nothing is protected.
    const std::string with_disk = cluster("storage = \"memory\"") + "disks = [\"path=/d.img\"]\n";
    CHECK(error_of(with_disk) == "/t/c.toml:65:9: disks of VM 'vm7': redundancy \"xor\" protects memory and device "
                                 "state, not disks (use storage = \"disk\", or redundancy = \"none\")");
    CHECK(parse(cluster("storage = \"memory\"\nredundancy = \"none\"") + "disks = [\"path=/d.img\"]\n").ok());
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

namespace {

// An epoch record of `c` whose holders finished every block of the placement.
ClusterManifest epoch_with_parity(const ClusterConfig& c)
{
    ClusterManifest m{"d", 7, "cow", true, "", 0, {}, {}};
    for (const auto& v : c.vms) m.vms.push_back({v.name, v.node, "000007", 1, 1, 0, 0, true, 65 << 20, 64 << 20, 2, 3});
    for (uint32_t s = 0; s < c.parity->sets.size(); ++s) {
        const auto keepers = parity_keepers(c, s);
        for (unsigned j = 0; j < keepers.size(); ++j) m.parity.push_back({s, j, keepers[j], 1, 2});
    }
    return m;
}

}  // namespace

TEST_CASE("lost nodes: VMs move to the least loaded survivors, ports kept unless taken; parity placed again or not at all")
{
    auto c = parse(cluster("storage = \"memory\"\nset_size = 3", 4, 2));
    REQUIRE(c.ok());
    auto r = relocate_lost(c.value(), {"n3"});
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? std::string() : r.error().message()));
    // vm3 and vm7 ran on n3; n0..n2 have 2 each: vm3 to n0, then n1 has fewest.
    CHECK(r->moved == std::vector<std::string>{"vm3 -> n0", "vm7 -> n1"});
    CHECK(r->config.vm("vm3")->node == "n0");
    CHECK(r->config.vm("vm3")->port == 7103);
    CHECK(r->config.vms_on("n3").empty());
    // 3 nodes left: sets of 3 with xor need 4; with a smaller set it would fit.
    CHECK_FALSE(r->config.parity);
    CHECK(r->unprotected.find("needs") != std::string::npos);
    auto small = parse(cluster("storage = \"memory\"\nset_size = 2", 4, 1));
    REQUIRE(small.ok());
    auto r2 = relocate_lost(small.value(), {"n1"});
    REQUIRE(r2.ok());
    CHECK(r2->config.parity);  // 3 nodes: sets of 2 plus one parity node
    for (const auto& set : r2->config.parity->sets)
        for (const auto& m : set.members) CHECK(r2->config.vm(m)->node != set.parity_nodes[0]);

    // The same port on every node (a common layout): a moved VM takes the next free one.
    std::string same_ports = cluster("storage = \"memory\"\nset_size = 2", 3, 1);
    for (const char* p : {"7101", "7102"}) same_ports.replace(same_ports.find(p), 4, "7100");
    auto s = parse(same_ports);
    REQUIRE(s.ok());
    auto r3 = relocate_lost(s.value(), {"n2"});
    REQUIRE(r3.ok());
    CHECK(r3->moved == std::vector<std::string>{"vm2 -> n0 (port 7101)"});

    CHECK(relocate_lost(c.value(), {"n9"}).error().message().find("no node 'n9'") != std::string::npos);
    CHECK(relocate_lost(c.value(), {"n0", "n1", "n2", "n3"}).error().message().find("no node with VMs survives") !=
          std::string::npos);
}

TEST_CASE("lost nodes: the rebuild plan takes every surviving member and as many surviving blocks as members lost")
{
    auto c = parse(cluster("storage = \"memory\"\nredundancy = \"rs:2\"\nset_size = 3", 5, 1));
    REQUIRE(c.ok());
    const ClusterManifest epoch = epoch_with_parity(c.value());
    const auto& set = c->parity->sets[0];
    REQUIRE(set.members.size() == 3);
    // Two members' nodes lost: both parity blocks rebuild them.
    const std::vector<std::string> lost = {c->vm(set.members[0])->node, c->vm(set.members[2])->node};
    auto plan = plan_rebuild(c.value(), epoch, lost);
    REQUIRE_MESSAGE(plan.ok(), (plan.ok() ? std::string() : plan.error().message()));
    bool found = false;
    for (const auto& r : plan.value()) {
        if (r.set != 0) continue;
        found = true;
        CHECK(r.lost == std::vector<unsigned>{0, 2});
        CHECK(r.parity_used == std::vector<unsigned>{0, 1});
        REQUIRE(r.sources.size() == 3);
        CHECK(r.sources[0].vm == set.members[1]);
        CHECK(source_code(r, r.sources[1]) == 3);  // parity block 0: after the 3 members
    }
    CHECK(found);
    // A member and a parity node lost leaves one block for one member: fine;
    // two members and a parity node: one clear line naming the set.
    const std::vector<std::string> too_many = {lost[0], lost[1], set.parity_nodes[0]};
    auto refused = plan_rebuild(c.value(), epoch, too_many);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().message().find("parity set 0") != std::string::npos);
    CHECK(refused.error().message().find("can rebuild at most 1") != std::string::npos);
    // An epoch without parity, and a cluster without it.
    ClusterManifest bare = epoch;
    bare.parity.clear();
    CHECK(plan_rebuild(c.value(), bare, {"n1"}).error().message().find("taken without parity") != std::string::npos);
    auto none = parse(cluster("storage = \"memory\"\nredundancy = \"none\"", 3, 1));
    REQUIRE(none.ok());
    CHECK(plan_rebuild(none.value(), bare, {"n1"}).error().message().find("no parity protects") != std::string::npos);
}

TEST_CASE("epoch parity: commits only with every member's image and every block finished once by its keeper")
{
    auto c = parse(cluster("storage = \"memory\"\nredundancy = \"rs:2\"\nset_size = 3", 5, 1));
    REQUIRE(c.ok());
    const ClusterManifest whole = epoch_with_parity(c.value());
    CHECK(check_epoch_parity(c.value(), whole.vms, whole.parity).ok());
    auto missing = whole.parity;
    missing.pop_back();
    CHECK(check_epoch_parity(c.value(), whole.vms, missing).error().message().find("was not finished by") != std::string::npos);
    auto twice = whole.parity;
    twice.push_back(twice.front());
    CHECK_FALSE(check_epoch_parity(c.value(), whole.vms, twice).ok());
    auto impostor = whole.parity;
    impostor[0].holder = "vm0" == impostor[0].holder ? "vm1" : "vm0";
    CHECK_FALSE(check_epoch_parity(c.value(), whole.vms, impostor).ok());
    auto silent = whole.vms;
    silent[2].image_bytes = 0;
    CHECK(check_epoch_parity(c.value(), silent, whole.parity).error().message() == "vm2 sent no parity");
}

TEST_CASE("lost nodes: a restore waiting for VMs it cannot reach names their nodes and, with parity, --lost")
{
    auto c = parse(cluster("storage = \"memory\"\nredundancy = \"xor\"\nset_size = 3", 4, 2));
    REQUIRE(c.ok());
    // vm1 and vm5 run on n1; vm2 is only slow (connected).
    CHECK(unreachable_hint(c.value(), {"vm1", "vm2", "vm5"}, {"vm2", "vm3"}) ==
          "; no connection to vm1 on n1, vm5 on n1: if n1 is gone, stop and restore every surviving node with "
          "--lost n1 (their VMs are rebuilt from parity)");
    CHECK(unreachable_hint(c.value(), {"vm2"}, {"vm2"}).empty());
    auto disk = parse(cluster("", 3, 1, "checkpoint_dir = \"/ck\"\n"));
    REQUIRE(disk.ok());
    CHECK(unreachable_hint(disk.value(), {"vm1", "vm2"}, {}) == "; no connection to vm1 on n1, vm2 on n2");
}
