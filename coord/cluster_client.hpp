// How `vvmm checkpoint --all` and `vvmm list` reach a running cluster: they
// connect to a VMM's peer port as a controller over TLS 1.3 keyed by the
// cluster secret (the same as peers, net/tls_psk.hpp), say which VMM they
// meant (net/peer_protocol.hpp, HELLO) and send one request. Any VMM will do, so this works from any machine that
// can reach one node.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coord/cluster_config.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::coord {

struct ClusterReply {
    std::string vm;  // which VMM answered
    nlohmann::json body;
};

// Asks VM `vm`'s VMM. `timeout` bounds the whole exchange.
Result<ClusterReply> ask_vm(const ClusterConfig& config, const std::vector<uint8_t>& secret, const std::string& vm,
                            const nlohmann::json& request, std::chrono::milliseconds timeout);
// Asks the first VMM that answers, in configuration order; the error lists
// why each one could not be asked.
Result<ClusterReply> ask_any_vm(const ClusterConfig& config, const std::vector<uint8_t>& secret,
                                const nlohmann::json& request, std::chrono::milliseconds timeout);
// The cluster secret, read from config.secret_file.
Result<std::vector<uint8_t>> read_cluster_secret(const ClusterConfig& config);

}  // namespace vvmm::coord
