// One description of a VM: what `vvmm run` is asked to build, what a cluster
// file's [[vm]] becomes, and what a checkpoint records so that restore
// rebuilds the same machine. Plain values only: each layer parses what it
// needs from them (devices/ the disks, net/ the interfaces), so no layer's
// types leak into the checkpoint format, and the format does not depend on
// the flags' grammar.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

inline constexpr const char* kDefaultCmdline = "console=ttyS0 reboot=k panic=-1 acpi=off";
inline constexpr unsigned kMinCpus = 1;
inline constexpr size_t kMaxDiskIdLength = 20;  // virtio-blk GET_ID

struct DiskDescription {
    std::string path;
    bool readonly = false;
    std::string id;  // serial the guest reads with GET_ID (at most 20 bytes)
    bool operator==(const DiskDescription&) const = default;
};

// A network interface on the peer mesh, as text values that net/ checks
// (net::peer_net_spec): addresses are "HOST:PORT", "[V6]:PORT".
struct NicDescription {
    std::string id;                  // this VMM's name in the cluster
    std::string listen;              // where the other VMMs reach this one
    std::vector<std::string> peers;  // every other VMM of the cluster
    std::string mac;                 // empty: derived from the id
    bool operator==(const NicDescription&) const = default;
};

struct VmDescription {
    std::string kernel;
    std::optional<std::string> initrd;
    std::string cmdline;  // the whole kernel command line (see cmdline_with_default)
    unsigned cpus = 1;
    uint64_t mem_bytes = 512ull << 20;
    bool huge_pages = false;
    std::string console = "stdio";
    std::vector<DiskDescription> disks;
    std::vector<NicDescription> nics;
};

// The default command line, then `extra` (what --cmdline appends).
std::string cmdline_with_default(std::string_view extra);

// Ranges and shapes only (no file system access); errors name the flags.
Result<void> validate_vm_description(const VmDescription& vm);

// The flags' grammars, `--disk path=FILE[,readonly=on][,id=SERIAL]` and
// `--net peer,id=NAME,listen=H:P[,peers=H:P;H:P][,mac=M]`: syntax only here
// (known keys, each once); net::peer_net_spec checks a NIC's values.
Result<DiskDescription> parse_disk_flag(const std::string& text);
Result<NicDescription> parse_nic_flag(std::string_view text);

}  // namespace vvmm::vmm
