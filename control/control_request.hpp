// A control API request (see control_server.hpp for the wire format): parsed
// and checked once, by the server, into this type; the VMM's handler and the
// CLI that builds requests use the same definition.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint_mode.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::control {

enum class ControlCommand { status, pause, resume, checkpoint, stop };

struct ControlRequest {
    ControlCommand cmd = ControlCommand::status;
    // checkpoint only
    std::string dir;  // empty: the VM's own checkpoint directory (not given)
    ckpt::CheckpointMode mode = ckpt::CheckpointMode::stop;
    bool incremental = false;
};

const char* command_name(ControlCommand cmd);
// Refuses unknown commands and fields, wrong types, an empty or NUL-holding
// dir, with the one-line error the client gets; fills in defaults.
Result<ControlRequest> parse_control_request(const nlohmann::json& request);
// Every field, defaults included ("dir", "mode" and "incremental" only for checkpoint).
nlohmann::json to_json(const ControlRequest& request);

}  // namespace vvmm::control
