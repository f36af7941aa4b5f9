// The network side of rebuilding lost VMs (issue 12, restore --lost): the
// VMM of each lost VM, started on its new node, receives from every source
// of its set's rebuild (coord/lost_nodes.hpp) over the cluster's peer mesh
// before it restores; the survivors' VMMs, restored and paused, send.
//
// A source sends, for each lost VM of its set: PARITY_BEGIN {"set",
// "member": its source code, "rebuild": true}, its whole image or parity
// block of the epoch as PARITY messages (zero pages left out: they fold in
// as nothing), then PARITY_END {"set", "member", "length"} or, when what it
// holds fails its checks, {"set", "member", "error"}. Every source checks
// what it sends against the epoch's record first; the rebuilder checks
// every rebuilt chunk again (ckpt/parity_rebuild.hpp).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "ckpt/manifest_seal.hpp"
#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"
#include "coord/lost_nodes.hpp"
#include "net/peer_mesh.hpp"

namespace vvmm::coord {

struct RebuildContext {
    ClusterConfig original;         // the placement the epoch was taken under
    std::vector<SetRebuild> plan;
    ClusterManifest epoch;
    ckpt::SealKey key;
};

// A survivor: sends what `vm` contributes to every rebuild in the plan
// (nothing when it is no source). `node_root`: its node's memory root.
Result<void> send_rebuild_sources(const RebuildContext& ctx, const std::string& vm, const std::string& node_root,
                                  net::PeerMesh& mesh, std::chrono::steady_clock::time_point deadline);

// A lost VM, relocated in `config`: joins the mesh under its own name,
// rebuilds its checkpoint of the epoch from the sources into its new node's
// root, records the epoch there with the rebuilt checkpoint's digest, and
// leaves the mesh. Returns the checkpoint's directory.
Result<std::string> rebuild_lost_vm(const RebuildContext& ctx, const ClusterConfig& config, const std::string& vm,
                                    const std::vector<uint8_t>& secret, std::chrono::seconds timeout);

}  // namespace vvmm::coord
