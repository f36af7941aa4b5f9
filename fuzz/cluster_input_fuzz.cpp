// What a cluster's users and peers hand a VMM: cfg.toml, and the cluster
// manifests of committed epochs (epochs/E.json, which another node may have
// written). Both must be refused with an error, never crash or over-read,
// whatever their bytes. The first byte chooses: bit 0 set, a cluster
// manifest (JSON); else cfg.toml, validated without touching the files it
// names. A config that is accepted must also give every VM a command line
// and a --net spec (the launcher builds both from it).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include <nlohmann/json.hpp>

#include "coord/cluster_config.hpp"
#include "coord/cluster_manifest.hpp"

using namespace vvmm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size == 0) return 0;
    const char* rest = reinterpret_cast<const char*>(data + 1);
    const size_t rest_size = size - 1;
    if (data[0] & 1) {
        auto j = nlohmann::json::parse(rest, rest + rest_size, nullptr, false);
        if (!j.is_discarded()) (void)coord::cluster_manifest_from_json(j);
        return 0;
    }
    auto config = coord::parse_cluster_config(std::string_view(rest, rest_size), "/fuzz/cluster.toml", false);
    if (!config) return 0;
    for (const auto& vm : config.value().vms) {
        (void)config.value().guest_cmdline(vm);
        if (!net::peer_net_spec(config.value().nic(vm))) __builtin_trap();
    }
    return 0;
}
