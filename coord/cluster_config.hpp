// The cluster configuration file (cfg.toml): which nodes exist, which VMs
// run on each, how they reach each other, where checkpoints go. Parsed with
// toml++ and validated completely before anything is started; see
// examples/cluster.toml for the format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "coord/parity_placement.hpp"
#include "net/net_spec.hpp"
#include "vmm/base/duration_parse.hpp"
#include "vmm/base/result.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::coord {

struct NodeConfig {
    std::string name;
    std::string address;  // numeric IPv4 or IPv6, where this node's VMMs listen for peers
};

struct VmEntry {
    std::string name;
    std::string node;
    uint16_t port = 0;  // peer-mesh port on the node's address
    net::MacAddress mac;  // given, or derived from the VM name if absent
    std::optional<std::string> ip;  // "a.b.c.d/len", the guest's own address
    // The machine as the file describes it: every path resolved (a relative
    // path in the file is taken relative to the file's directory). Its
    // cmdline is the file's alone and it has no nics: the cluster adds both
    // (ClusterConfig::description).
    vmm::VmDescription machine;
};

// Where committed checkpoints live (issue 12, DESIGN.md "Diskless checkpoints").
enum class CheckpointStorage {
    disk,    // checkpoint_dir: shared or local disk
    memory,  // memory_dir/<node>: a node-local tmpfs, protected by parity across nodes
};

// How a diskless cluster survives lost nodes: `partner` keeps a copy of each
// VM's checkpoint on another node (a parity set of one), `xor` one parity
// block per set, `rs:K` K Reed-Solomon blocks (K lost nodes).
struct Redundancy {
    enum class Kind { none, partner, xor_parity, reed_solomon };
    Kind kind = Kind::none;
    unsigned parity_count = 0;  // blocks per set: 0, 1 (partner, xor) or K
    std::string name() const;   // as written in cfg.toml: "none", "partner", "xor", "rs:2"
};
inline constexpr unsigned kMaxParityBlocks = 4;  // rs:K, K at most (ckpt/parity_codec)

// When the cluster takes epochs by itself.
struct EpochSchedule {
    enum class Kind { on_request, fixed, automatic };  // automatic: Daly's interval from mtbf
    Kind kind = Kind::on_request;
    Seconds interval{0};  // fixed
};

struct ClusterConfig {
    std::string name;
    std::filesystem::path file;  // the config file itself, absolute
    std::filesystem::path secret_file;
    std::filesystem::path checkpoint_dir;
    std::string mode = "stop";  // default checkpoint mode: stop | live | cow
    CheckpointStorage storage = CheckpointStorage::disk;
    std::filesystem::path memory_dir;  // storage = memory: each node's root is memory_dir/<node>
    Redundancy redundancy;             // none unless storage = memory
    unsigned set_size = 0;             // VMs per parity set (redundancy other than none)
    std::optional<ParityLayout> parity;  // computed from the above, once valid
    EpochSchedule schedule;
    std::optional<Seconds> mtbf;       // node MTBF, for the automatic interval and `plan`
    unsigned persist_every = 0;        // storage = memory: every Nth committed epoch also goes to persist_dir
    std::filesystem::path persist_dir;
    std::vector<NodeConfig> nodes;
    std::vector<VmEntry> vms;

    const NodeConfig* node(std::string_view name) const;
    // The directory holding `node`'s checkpoints and committed epochs:
    // checkpoint_dir, or memory_dir/<node> with storage = memory.
    std::filesystem::path node_checkpoint_dir(std::string_view node) const;
    const VmEntry* vm(std::string_view name) const;
    std::vector<const VmEntry*> vms_on(std::string_view node) const;

    // Where `vm` listens for its peers: its node's address and its port.
    net::SocketAddress listen_address(const VmEntry& vm) const;
    // Every other VM's listen address, in file order.
    std::vector<net::SocketAddress> peers_of(const VmEntry& vm) const;
    // Every other VM's name, in the same order.
    std::vector<std::string> peer_names(const VmEntry& vm) const;

    // The text for `vvmm run --cmdline`: the VM's own cmdline followed by
    // " vvmm.macs=M0,M1,..." (every VM's MAC, in file order, itself included)
    // and, when the VMs have guest IPs, " vvmm.ip=A.B.C.D/LEN
    // vvmm.peers=IP,IP,..." (the other VMs' addresses without prefix length,
    // in file order; empty — "vvmm.peers=" — for a VM alone). A guest parses
    // these to configure its interface and learn its peers.
    std::string guest_cmdline(const VmEntry& vm) const;

    // The VM's interface on the cluster's mesh: its name, its listen
    // address, every other VM's, its MAC.
    vmm::NicDescription nic(const VmEntry& vm) const;

    // The whole machine `vm` is: the file's, with the default and the
    // cluster's command line (guest_cmdline) and its nic.
    vmm::VmDescription description(const VmEntry& vm) const;
};

// The parity placement of `config`'s VMs over the nodes that host VMs, for
// its redundancy and set_size (both set).
Result<ParityLayout> parity_layout_of(const ClusterConfig& config);

// Reads and validates `file`, including (with `check_files`) the files it
// names (see below). Controllers on another machine skip those.
Result<ClusterConfig> load_cluster_config(const std::filesystem::path& file, bool check_files = true);

// Validates `text` as if read from `file` (used for error positions and to
// resolve relative paths). Every mistake is one line "FILE:LINE:COL: what",
// at the offending value (or, for a missing key, at its table); all the
// mistakes found are reported, one per line, in one Error.
// With `check_files`: the secret file must exist, be non-empty and not be
// readable by group or others; kernel, initrd and disk images must exist.
// The checkpoint directory may be missing (it is created on use) but if it
// exists it must be a directory. On a multi-node cluster every node is
// expected to see the same paths (shared file system or identical layout).
Result<ClusterConfig> parse_cluster_config(std::string_view text, const std::filesystem::path& file,
                                           bool check_files);

}  // namespace vvmm::coord
