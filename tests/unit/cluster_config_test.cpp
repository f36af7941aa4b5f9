#include <doctest/doctest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "coord/cluster_config.hpp"
#include "net/net_spec.hpp"

using vvmm::coord::ClusterConfig;
using vvmm::coord::load_cluster_config;
using vvmm::coord::parse_cluster_config;
namespace fs = std::filesystem;

namespace {

// Line numbers matter: the error tests below point into this text.
const std::string kGood = R"([cluster]
name = "demo"
secret_file = "demo.key"
checkpoint_dir = "ckpt"
mode = "cow"

[[node]]
name = "n0"
address = "127.0.0.1"

[[node]]
name = "n1"
address = "10.0.0.2"

[[vm]]
name = "vm0"
node = "n0"
port = 7100
cpus = 2
mem = "256M"
kernel = "guest/k.bzImage"
cmdline = "test=ring me=0 n=3"
mac = "52:54:00:aa:00:01"
disks = ["path=vm0.img", "path=/abs/shared.img,readonly=on,id=shared"]
ip = "10.1.0.1/24"

[[vm]]
name = "vm1"
node = "n0"
port = 7101
mem = "256M"
kernel = "guest/k.bzImage"
mac = "52:54:00:aa:00:02"
ip = "10.1.0.2/24"

[[vm]]
name = "vm2"
node = "n1"
port = 7100
kernel = "/boot/k"
initrd = "init.cpio"
ip = "10.1.0.3/24"
)";

// `from` must occur exactly once, so a typo in a test cannot silently test nothing.
std::string edit(const std::string& text, const std::string& from, const std::string& to)
{
    const auto at = text.find(from);
    REQUIRE_MESSAGE(at != std::string::npos, "'" << from << "' not in the config");
    REQUIRE_MESSAGE(text.find(from, at + 1) == std::string::npos, "'" << from << "' is ambiguous");
    return text.substr(0, at) + to + text.substr(at + from.size());
}

// Messages are evaluated even on success (doctest -s), so never call error() on a good result.
template <typename R>
std::string why(const R& r)
{
    return r.ok() ? std::string() : r.error().message();
}

std::vector<std::string> lines_of(const std::string& s)
{
    std::vector<std::string> out;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
}

// The config must fail with exactly `count` error lines, one of which starts
// with `prefix` ("t/c.toml:LINE:COL: ") and contains `phrase`.
void expect_error(const std::string& text, const std::string& prefix, const std::string& phrase, size_t count = 1)
{
    auto r = parse_cluster_config(text, "t/c.toml", false);
    REQUIRE_FALSE(r.ok());
    const auto lines = lines_of(r.error().message());
    CHECK_MESSAGE(lines.size() == count, r.error().message());
    bool found = false;
    for (const auto& l : lines)
        if (l.rfind(prefix, 0) == 0 && l.find(phrase) != std::string::npos) found = true;
    CHECK_MESSAGE(found, "wanted '" << prefix << "...'" << phrase << "'...', got:\n" << r.error().message());
}

struct CfgDir {
    CfgDir()
    {
        char tmpl[] = "/tmp/vvmm-cfg-test-XXXXXX";
        REQUIRE(::mkdtemp(tmpl) != nullptr);
        path = tmpl;
    }
    ~CfgDir() { fs::remove_all(path); }
    void write(const std::string& name, const std::string& content, mode_t mode = 0600)
    {
        fs::create_directories((path / name).parent_path());
        std::ofstream(path / name) << content;
        REQUIRE(::chmod((path / name).c_str(), mode) == 0);
    }
    fs::path path;
};

// A directory holding everything kGood names, with `/abs/...` and `/boot/k`
// rewritten to live inside it.
std::string populate(CfgDir& d)
{
    d.write("demo.key", "0123456789abcdef0123456789abcdef");
    d.write("guest/k.bzImage", "kernel");
    d.write("vm0.img", std::string(4096, '\0'));
    d.write("abs/shared.img", std::string(4096, '\0'));
    d.write("boot/k", "kernel");
    d.write("init.cpio", "initrd");
    std::string text = edit(kGood, "path=/abs/shared.img", "path=" + (d.path / "abs/shared.img").string());
    return edit(text, "kernel = \"/boot/k\"", "kernel = \"" + (d.path / "boot/k").string() + "\"");
}

}  // namespace

TEST_CASE("cluster config: a good config round trip")
{
    CfgDir d;
    const std::string text = populate(d);
    d.write("c.toml", text);
    auto r = load_cluster_config(d.path / "c.toml");
    REQUIRE_MESSAGE(r.ok(), why(r));
    const ClusterConfig& c = r.value();
    CHECK(c.name == "demo");
    CHECK(c.file == d.path / "c.toml");
    CHECK(c.secret_file == d.path / "demo.key");
    CHECK(c.checkpoint_dir == d.path / "ckpt");
    CHECK(c.mode == "cow");
    REQUIRE(c.nodes.size() == 2);
    CHECK(c.nodes[1].name == "n1");
    CHECK(c.nodes[1].address == "10.0.0.2");
    REQUIRE(c.vms.size() == 3);

    const auto& vm0 = c.vms[0];
    CHECK(vm0.name == "vm0");
    CHECK(vm0.node == "n0");
    CHECK(vm0.port == 7100);
    CHECK(vm0.machine.cpus == 2);
    CHECK(vm0.machine.mem_bytes == 256ull << 20);
    CHECK(vm0.machine.kernel == (d.path / "guest/k.bzImage").string());
    CHECK_FALSE(vm0.machine.initrd.has_value());
    CHECK(vm0.machine.cmdline == "test=ring me=0 n=3");
    CHECK(vm0.mac.to_string() == "52:54:00:aa:00:01");
    REQUIRE(vm0.machine.disks.size() == 2);
    CHECK(vm0.machine.disks[0] == vvmm::vmm::DiskDescription{(d.path / "vm0.img").string(), false, ""});
    CHECK(vm0.machine.disks[1] == vvmm::vmm::DiskDescription{(d.path / "abs/shared.img").string(), true, "shared"});
    CHECK(vm0.ip == "10.1.0.1/24");

    // Defaults: one vCPU, 512 MiB, no cmdline, a MAC derived from the name.
    const auto& vm2 = c.vms[2];
    CHECK(vm2.machine.cpus == 1);
    CHECK(vm2.machine.mem_bytes == 512ull << 20);
    CHECK(vm2.machine.cmdline.empty());
    CHECK(vm2.mac == vvmm::net::MacAddress::derived_from_id("vm2"));
    CHECK(vm2.machine.initrd == (d.path / "init.cpio").string());
    CHECK(vm2.machine.kernel == (d.path / "boot/k").string());
    CHECK(vm2.machine.disks.empty());

    REQUIRE(c.node("n0") != nullptr);
    CHECK(c.node("n0")->address == "127.0.0.1");
    CHECK(c.node("n9") == nullptr);
    CHECK(c.vm("vm1") == &c.vms[1]);
    const auto on_n0 = c.vms_on("n0");
    REQUIRE(on_n0.size() == 2);
    CHECK(on_n0[0]->name == "vm0");
    CHECK(on_n0[1]->name == "vm1");
    CHECK(c.vms_on("n1").size() == 1);
    CHECK(c.vms_on("n9").empty());

    CHECK(c.listen_address(vm2).to_string() == "10.0.0.2:7100");
    const auto peers = c.peers_of(vm0);
    REQUIRE(peers.size() == 2);
    CHECK(peers[0].to_string() == "127.0.0.1:7101");
    CHECK(peers[1].to_string() == "10.0.0.2:7100");
}

TEST_CASE("cluster config: relative paths resolve against the config file's directory")
{
    CfgDir d;
    // A config in a subdirectory, loaded by a relative path from elsewhere.
    const std::string text = R"([cluster]
name = "x"
secret_file = "../keys/x.key"
checkpoint_dir = "/var/tmp/ckpt"
[[node]]
name = "n"
address = "127.0.0.1"
[[vm]]
name = "v"
node = "n"
port = 7000
kernel = "k"
disks = ["path=d/disk.img,id=a"]
)";
    d.write("conf/c.toml", text);
    d.write("keys/x.key", "secret");
    d.write("conf/k", "kernel");
    d.write("conf/d/disk.img", std::string(512, '\0'));
    const fs::path old = fs::current_path();
    fs::current_path(d.path / "keys");
    auto r = load_cluster_config("../conf/c.toml");
    fs::current_path(old);
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(r->file == d.path / "conf/c.toml");
    CHECK(r->secret_file == d.path / "keys/x.key");
    CHECK(r->checkpoint_dir == "/var/tmp/ckpt");  // absolute stays as is
    CHECK(r->mode == "stop");                      // the default
    CHECK(r->vms[0].machine.kernel == (d.path / "conf/k").string());
    CHECK(r->vms[0].machine.disks[0] == vvmm::vmm::DiskDescription{(d.path / "conf/d/disk.img").string(), false, "a"});
    CHECK(fs::path(r->vms[0].machine.kernel).is_absolute());
}

TEST_CASE("cluster config: a VM's nic is what --net accepts; its description adds the cluster's parts")
{
    auto r = parse_cluster_config(kGood, "t/c.toml", false);
    REQUIRE_MESSAGE(r.ok(), why(r));
    const ClusterConfig& c = r.value();
    CHECK(c.nic(c.vms[1]) == vvmm::vmm::NicDescription{"vm1", "127.0.0.1:7101", {"127.0.0.1:7100", "10.0.0.2:7100"},
                                                       "52:54:00:aa:00:02"});
    const auto described = c.description(c.vms[0]);
    CHECK(described.cmdline == vvmm::vmm::cmdline_with_default(c.guest_cmdline(c.vms[0])));
    CHECK(described.nics == std::vector{c.nic(c.vms[0])});
    CHECK(described.disks == c.vms[0].machine.disks);
    CHECK(described.cpus == c.vms[0].machine.cpus);
    for (const auto& vm : c.vms) {
        auto spec = vvmm::net::peer_net_spec(c.nic(vm));
        REQUIRE_MESSAGE(spec.ok(), why(spec));
        CHECK(spec->id == vm.name);
        CHECK(spec->listen == c.listen_address(vm));
        CHECK(spec->peers == c.peers_of(vm));
        CHECK(spec->mac == vm.mac);
        CHECK_FALSE(spec->mac_derived);
    }

    // A VM alone has no peers= at all; IPv6 node addresses get brackets.
    auto alone = parse_cluster_config(R"([cluster]
name = "a"
secret_file = "k"
checkpoint_dir = "c"
[[node]]
name = "n"
address = "::1"
[[vm]]
name = "solo"
node = "n"
port = 7000
kernel = "k"
)",
                                      "t/a.toml", false);
    REQUIRE_MESSAGE(alone.ok(), why(alone));
    const auto nic = alone->nic(alone->vms[0]);
    CHECK(nic.listen == "[::1]:7000");
    CHECK(nic.peers.empty());
    CHECK(vvmm::net::peer_net_spec(nic).ok());
}

TEST_CASE("cluster config: guest_cmdline tells the guest its address and its peers")
{
    auto r = parse_cluster_config(kGood, "t/c.toml", false);
    REQUIRE_MESSAGE(r.ok(), why(r));
    const ClusterConfig& c = r.value();
    const std::string macs = "vvmm.macs=52:54:00:aa:00:01,52:54:00:aa:00:02," + c.vms[2].mac.to_string();
    CHECK(c.guest_cmdline(c.vms[0]) == "test=ring me=0 n=3 " + macs + " vvmm.ip=10.1.0.1/24 vvmm.peers=10.1.0.2,10.1.0.3");
    CHECK(c.guest_cmdline(c.vms[1]) == macs + " vvmm.ip=10.1.0.2/24 vvmm.peers=10.1.0.1,10.1.0.3");
    CHECK(c.peer_names(c.vms[1]) == std::vector<std::string>{"vm0", "vm2"});

    // Without guest IPs the guest only learns every VM's MAC.
    std::string text = edit(kGood, "ip = \"10.1.0.1/24\"", "");
    text = edit(text, "ip = \"10.1.0.2/24\"", "");
    text = edit(text, "ip = \"10.1.0.3/24\"", "");
    auto no_ip = parse_cluster_config(text, "t/c.toml", false);
    REQUIRE_MESSAGE(no_ip.ok(), why(no_ip));
    CHECK(no_ip->guest_cmdline(no_ip->vms[0]) == "test=ring me=0 n=3 " + macs);
    CHECK(no_ip->guest_cmdline(no_ip->vms[2]) == macs);

    // vvmm.* words vvmm does not generate belong to the guest (the Linux
    // test initramfs runs vvmm.run=...), and pass through unchanged.
    auto run = parse_cluster_config(edit(kGood, "cmdline = \"test=ring me=0 n=3\"",
                                         "cmdline = 'vvmm.run=\"tcpstream --me $VVMM_IP\"'"), "t/c.toml", false);
    REQUIRE_MESSAGE(run.ok(), why(run));
    CHECK(run->guest_cmdline(run->vms[0]).rfind("vvmm.run=\"tcpstream --me $VVMM_IP\" vvmm.macs=", 0) == 0);
}

TEST_CASE("cluster config: TOML syntax errors carry toml++'s position")
{
    expect_error(edit(kGood, "name = \"vm1\"", "name = \"vm1"), "t/c.toml:28:", "TOML syntax error");
    expect_error(edit(kGood, "port = 7101", "port = 7101\nport = 7102"), "t/c.toml:31:", "TOML syntax error");
}

TEST_CASE("cluster config: unknown keys name the key and the table")
{
    expect_error(edit(kGood, "mode = \"cow\"", "mdoe = \"cow\""), "t/c.toml:5:1: ",
                 "unknown key 'mdoe' in [cluster]");
    expect_error(edit(kGood, "cmdline = \"test", "cmdlin = \"test"), "t/c.toml:22:1: ",
                 "unknown key 'cmdlin' in [[vm]] 'vm0'");
    expect_error(edit(kGood, "name = \"n1\"", "name = \"n1\"\nzone = \"a\""), "t/c.toml:13:1: ",
                 "unknown key 'zone' in [[node]] 'n1'");
    expect_error("top = 1\n" + kGood, "t/c.toml:1:1: ", "unknown key 'top' in the top level");
    expect_error(kGood + "[extra]\nx = 1\n", "t/c.toml:43:2: ", "unknown key 'extra' in the top level");
}

TEST_CASE("cluster config: missing required keys point at their table")
{
    expect_error(edit(kGood, "name = \"demo\"", "# no name"), "t/c.toml:1:1: ",
                 "[cluster] is missing required key 'name'");
    expect_error(edit(kGood, "secret_file = \"demo.key\"", ""), "t/c.toml:1:1: ",
                 "[cluster] is missing required key 'secret_file'");
    expect_error(edit(kGood, "checkpoint_dir = \"ckpt\"", ""), "t/c.toml:1:1: ",
                 "[cluster] is missing required key 'checkpoint_dir'");
    expect_error(edit(kGood, "port = 7101", "# no port"), "t/c.toml:27:1: ",
                 "[[vm]] 'vm1' is missing required key 'port'");
    expect_error(edit(kGood, "kernel = \"/boot/k\"", ""), "t/c.toml:36:1: ",
                 "[[vm]] 'vm2' is missing required key 'kernel'");
    expect_error(edit(kGood, "address = \"10.0.0.2\"", ""), "t/c.toml:11:1: ",
                 "[[node]] 'n1' is missing required key 'address'");  // vm2 on n1 is not blamed too
    expect_error(edit(kGood, "[cluster]\nname = \"demo\"\nsecret_file = \"demo.key\"\ncheckpoint_dir = \"ckpt\"\n"
                             "mode = \"cow\"\n",
                      ""),
                 "t/c.toml:1:1: ", "missing [cluster] table");
    expect_error("[cluster]\nname = \"x\"\nsecret_file = \"k\"\ncheckpoint_dir = \"c\"\n", "t/c.toml:1:1: ",
                 "no [[node]] defined", 2);
    expect_error("[cluster]\nname = \"x\"\nsecret_file = \"k\"\ncheckpoint_dir = \"c\"\n[[node]]\nname = \"n\"\n"
                 "address = \"127.0.0.1\"\n",
                 "t/c.toml:1:1: ", "no [[vm]] defined");
}

TEST_CASE("cluster config: huge_pages")
{
    auto r = parse_cluster_config(edit(kGood, "cpus = 2", "cpus = 2\nhuge_pages = true"), "t/c.toml", false);
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(r->vms[0].machine.huge_pages);
    CHECK_FALSE(r->vms[1].machine.huge_pages);
}

TEST_CASE("cluster config: wrong types")
{
    expect_error(edit(kGood, "port = 7101", "port = \"7101\""), "t/c.toml:30:8: ",
                 "'port' in [[vm]] 'vm1' must be an integer, not a string");
    expect_error(edit(kGood, "cpus = 2", "cpus = 2.0"), "t/c.toml:19:8: ",
                 "'cpus' in [[vm]] 'vm0' must be an integer, not a floating-point number");
    expect_error(edit(kGood, "name = \"demo\"", "name = 5"), "t/c.toml:2:8: ",
                 "'name' in [cluster] must be a string, not an integer");
    expect_error(edit(kGood, "cpus = 2", "cpus = 2\nhuge_pages = 1"), "t/c.toml:20:14: ",
                 "'huge_pages' in [[vm]] 'vm0' must be true or false, not an integer");
    expect_error(edit(kGood, "disks = [\"path=vm0.img\",", "disks = [1,"), "t/c.toml:24:10: ",
                 "disks of [[vm]] 'vm0' must be strings");
    expect_error(edit(kGood, "ip = \"10.1.0.3/24\"", "disks = \"path=x\"\nip = \"10.1.0.3/24\""), "t/c.toml:42:9: ",
                 "'disks' in [[vm]] 'vm2' must be an array of strings, not a string");
    expect_error(edit(kGood, "mem = \"256M\"\nkernel = \"guest/k.bzImage\"\ncmdline", "mem = true\nkernel = \"guest/k.bzImage\"\ncmdline"),
                 "t/c.toml:20:7: ", "'mem' in [[vm]] 'vm0' must be a size like \"256M\", not a boolean");
    expect_error("[cluster]\nname = \"x\"\nsecret_file = \"k\"\ncheckpoint_dir = \"c\"\n[[node]]\nname = \"n\"\n"
                 "address = \"127.0.0.1\"\n[vm]\nname = \"v\"\n",
                 "t/c.toml:8:1: ", "'vm' must be written as [[vm]] tables, not a table");
    expect_error("cluster = 1\n[[node]]\nname = \"n\"\naddress = \"127.0.0.1\"\n[[vm]]\nname = \"v\"\nnode = \"n\"\n"
                 "port = 1\nkernel = \"k\"\n",
                 "t/c.toml:1:11: ", "'cluster' must be a [cluster] table, not an integer");
}

TEST_CASE("cluster config: duplicate names, unknown nodes, port clashes")
{
    expect_error(edit(kGood, "name = \"n1\"", "name = \"n0\""), "t/c.toml:12:8: ",
                 "duplicate node name 'n0' (first at 8:8)", 2);  // + vm2's n1 is gone
    expect_error(edit(kGood, "name = \"vm1\"", "name = \"vm0\""), "t/c.toml:28:8: ",
                 "duplicate VM name 'vm0' (first at 16:8)");
    expect_error(edit(kGood, "node = \"n1\"", "node = \"n9\""), "t/c.toml:38:8: ",
                 "[[vm]] 'vm2' is on unknown node 'n9'");
    expect_error(edit(kGood, "port = 7101", "port = 7100"), "t/c.toml:30:8: ",
                 "port clash: VM 'vm1' and VM 'vm0' (at 18:8) both listen on 127.0.0.1:7100");
    // Two node names on one address share its ports.
    expect_error(edit(kGood, "address = \"10.0.0.2\"", "address = \"127.0.0.1\""), "t/c.toml:39:8: ",
                 "port clash: VM 'vm2' and VM 'vm0'");
    // The same port on different addresses is fine (vm0 and vm2 both use 7100).
    CHECK(parse_cluster_config(kGood, "t/c.toml", false).ok());
}

TEST_CASE("cluster config: ranges of port, cpus and mem")
{
    expect_error(edit(kGood, "port = 7101", "port = 0"), "t/c.toml:30:8: ", "port 0 of [[vm]] 'vm1' is out of range");
    expect_error(edit(kGood, "port = 7101", "port = 65536"), "t/c.toml:30:8: ", "port 65536 of [[vm]] 'vm1' is out of range");
    expect_error(edit(kGood, "port = 7101", "port = -1"), "t/c.toml:30:8: ", "out of range (1..65535)");
    expect_error(edit(kGood, "cpus = 2", "cpus = 0"), "t/c.toml:19:8: ", "cpus 0 of [[vm]] 'vm0' is out of range (1..32)");
    expect_error(edit(kGood, "cpus = 2", "cpus = 33"), "t/c.toml:19:8: ", "cpus 33 of [[vm]] 'vm0' is out of range");
    const std::string mem0 = "mem = \"256M\"\nkernel = \"guest/k.bzImage\"\ncmdline";
    auto with_mem = [&](const std::string& m) { return edit(kGood, mem0, "mem = " + m + "\nkernel = \"guest/k.bzImage\"\ncmdline"); };
    expect_error(with_mem("\"255M\""), "t/c.toml:20:7: ", "must be a multiple of 2 MiB");
    expect_error(with_mem("\"16M\""), "t/c.toml:20:7: ", "out of range");
    expect_error(with_mem("\"2T\""), "t/c.toml:20:7: ", "out of range");
    expect_error(with_mem("\"lots\""), "t/c.toml:20:7: ", "mem of [[vm]] 'vm0'");
    expect_error(with_mem("-5"), "t/c.toml:20:7: ", "must be a size");
    auto bytes = parse_cluster_config(with_mem("268435456"), "t/c.toml", false);
    REQUIRE_MESSAGE(bytes.ok(), why(bytes));
    CHECK(bytes->vms[0].machine.mem_bytes == 256ull << 20);
}

TEST_CASE("cluster config: MACs and guest IPs")
{
    expect_error(edit(kGood, "52:54:00:aa:00:01", "52:54:00:aa:00"), "t/c.toml:23:7: ", "not a MAC address");
    expect_error(edit(kGood, "52:54:00:aa:00:01", "01:00:5e:00:00:01"), "t/c.toml:23:7: ", "not a unicast address");
    expect_error(edit(kGood, "52:54:00:aa:00:02", "52:54:00:AA:00:01"), "t/c.toml:33:7: ",
                 "duplicate MAC 52:54:00:aa:00:01: VM 'vm1' and VM 'vm0' (at 23:7)");
    // A derived MAC clashes with a given one too.
    const std::string derived = vvmm::net::MacAddress::derived_from_id("vm2").to_string();
    expect_error(edit(kGood, "52:54:00:aa:00:02", derived), "t/c.toml:36:1: ", "duplicate MAC " + derived);

    for (const char* bad : {"10.1.0.2", "10.1.0.256/24", "10.1.0.2/33", "10.1.0.2/0", "010.1.0.2/24", "10.1.2/24",
                            "10.1.0.2.5/24", "::1/64", "10.1.0.2/24x"}) {
        CAPTURE(bad);
        expect_error(edit(kGood, "10.1.0.2/24", bad), "t/c.toml:34:6: ", "is not an IPv4 address with prefix length");
    }
    expect_error(edit(kGood, "10.1.0.2/24", "10.1.0.1/16"), "t/c.toml:34:6: ",
                 "duplicate guest ip 10.1.0.1: VM 'vm1' and VM 'vm0' (at 25:6)");
    expect_error(edit(kGood, "ip = \"10.1.0.2/24\"", ""), "t/c.toml:27:1: ",
                 "[[vm]] 'vm1' has no 'ip' but other VMs do");
}

TEST_CASE("cluster config: disks, mode, names, addresses, cmdline")
{
    expect_error(edit(kGood, "path=vm0.img", "path=vm0.img,bogus=1"), "t/c.toml:24:10: ",
                 "disk of [[vm]] 'vm0': --disk: unknown key 'bogus'");
    expect_error(edit(kGood, "readonly=on", "readonly=maybe"), "t/c.toml:24:26: ", "readonly must be on or off");
    expect_error(edit(kGood, "\"path=vm0.img\"", "\"id=x\""), "t/c.toml:24:10: ", "needs path=FILE");
    expect_error(edit(kGood, "mode = \"cow\"", "mode = \"fast\""), "t/c.toml:5:8: ",
                 "unknown mode 'fast' (expected stop, live or cow)");
    expect_error(edit(kGood, "name = \"vm1\"", "name = \"vm 1\""), "t/c.toml:28:8: ",
                 "VM name 'vm 1' may only contain letters");
    expect_error(edit(kGood, "name = \"vm1\"", "name = \"..\""), "t/c.toml:28:8: ", "is not usable as a directory name");
    expect_error(edit(kGood, "name = \"vm1\"", "name = \"" + std::string(65, 'a') + "\""), "t/c.toml:28:8: ",
                 "must be 1..64 characters");
    expect_error(edit(kGood, "name = \"n1\"", "name = \"n/1\""), "t/c.toml:12:8: ", "node name 'n/1' may only contain",
                 2);  // + vm2's node n1 is unknown
    expect_error(edit(kGood, "name = \"demo\"", "name = \"\""), "t/c.toml:2:8: ", "cluster name '' must be 1..64");
    expect_error(edit(kGood, "10.0.0.2", "localhost"), "t/c.toml:13:11: ",
                 "address 'localhost' of [[node]] 'n1' is not a numeric IPv4 or IPv6 address");
    expect_error(edit(kGood, "10.0.0.2", "0.0.0.0"), "t/c.toml:13:11: ", "is a wildcard");
    expect_error(edit(kGood, "n=3\"", "n=3 vvmm.ip=1.2.3.4/8\""), "t/c.toml:22:11: ",
                 "sets 'vvmm.ip=1.2.3.4/8'; vvmm.macs, vvmm.ip and vvmm.peers are generated");
    expect_error(edit(kGood, "kernel = \"/boot/k\"", "kernel = \"\""), "t/c.toml:40:10: ", "must be a non-empty path");
    // Every mistake is reported, each on its own line.
    std::string two = edit(kGood, "cpus = 2", "cpus = 99");
    two = edit(two, "mode = \"cow\"", "mode = \"x\"");
    expect_error(two, "t/c.toml:19:8: ", "cpus 99", 2);
    expect_error(two, "t/c.toml:5:8: ", "unknown mode 'x'", 2);
}

TEST_CASE("cluster config: with check_files, the named files must exist and the secret must be private")
{
    CfgDir d;
    const std::string good = populate(d);
    const std::string file = (d.path / "c.toml").string();
    auto check = [&](const std::string& text, const std::string& pos, const std::string& phrase) {
        auto r = parse_cluster_config(text, file, true);
        REQUIRE_FALSE(r.ok());
        const auto lines = lines_of(r.error().message());
        CHECK_MESSAGE(lines.size() == 1, r.error().message());
        CHECK_MESSAGE(lines[0].rfind(file + ":" + pos + ": ", 0) == 0, r.error().message());
        CHECK_MESSAGE(lines[0].find(phrase) != std::string::npos, r.error().message());
    };
    REQUIRE(parse_cluster_config(good, file, true).ok());

    check(edit(good, "guest/k.bzImage\"\ncmdline", "guest/nope\"\ncmdline"), "21:10",
          "kernel of [[vm]] 'vm0' '" + (d.path / "guest/nope").string() + "': No such file");
    check(edit(good, "init.cpio", "nope.cpio"), "41:10", "initrd of [[vm]] 'vm2'");
    check(edit(good, "path=vm0.img", "path=nope.img"), "24:10", "disk of [[vm]] 'vm0' '" + (d.path / "nope.img").string());
    check(edit(good, "guest/k.bzImage\"\ncmdline", "guest\"\ncmdline"), "21:10", "is not a regular file");

    check(edit(good, "demo.key", "nope.key"), "3:15", "secret file '" + (d.path / "nope.key").string() +
                                                          "': No such file or directory (create it with: head -c 32");
    d.write("demo.key", "");
    check(good, "3:15", "is empty");
    d.write("demo.key", "secret", 0640);
    check(good, "3:15", "is accessible by group or others (mode 0640); run chmod 600");
    d.write("demo.key", "secret", 0604);
    check(good, "3:15", "(mode 0604)");
    d.write("demo.key", "secret", 0400);
    CHECK(parse_cluster_config(good, file, true).ok());

    d.write("ckpt", "not a directory");
    check(good, "4:18", "checkpoint_dir '" + (d.path / "ckpt").string() + "' exists and is not a directory");
    fs::remove(d.path / "ckpt");
    fs::create_directory(d.path / "ckpt");
    CHECK(parse_cluster_config(good, file, true).ok());

    // Without check_files nothing is looked up.
    CHECK(parse_cluster_config(edit(good, "demo.key", "nope.key"), file, false).ok());
}

TEST_CASE("cluster config: load_cluster_config errors")
{
    auto missing = load_cluster_config("/nonexistent/c.toml");
    REQUIRE_FALSE(missing.ok());
    CHECK(missing.error().message().rfind("cannot open cluster config /nonexistent/c.toml", 0) == 0);
    // A directory is not a config (and is not read as an empty one).
    auto dir = load_cluster_config(fs::temp_directory_path());
    REQUIRE_FALSE(dir.ok());
    CHECK(dir.error().message().find("is not a regular file") != std::string::npos);
}

TEST_CASE("cluster config: examples/cluster.toml is valid")
{
    // Found from the source tree (meson compiles with paths relative to the
    // build directory) or from the current directory.
    fs::path example;
    for (fs::path p : {fs::path(__FILE__).parent_path() / "../../examples/cluster.toml",
                       fs::path("examples/cluster.toml"), fs::path("../examples/cluster.toml")})
        if (fs::exists(p)) example = p;
    if (example.empty()) {
        MESSAGE("examples/cluster.toml not found from " << fs::current_path() << "; skipped");
        return;
    }
    std::ifstream in(example);
    std::stringstream text;
    text << in.rdbuf();
    auto r = parse_cluster_config(text.str(), example, false);
    REQUIRE_MESSAGE(r.ok(), why(r));
    CHECK(r->name == "demo");
    CHECK(r->vms.size() == 3);
    CHECK(r->vms_on("n0").size() == 3);
    CHECK(r->vms[2].port == 7102);
    CHECK(r->vms[0].machine.kernel ==
          (fs::absolute(example).parent_path() / "../build/guest/testguest.bzImage").lexically_normal().string());
    for (const auto& vm : r->vms) CHECK(vvmm::net::peer_net_spec(r->nic(vm)).ok());
}
