// The client side of the control API (control_server.hpp has the protocol).
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "vmm/base/result.hpp"

namespace vvmm::control {

// Sends one request to the VMM listening on socket_path and returns its reply
// (an object with a boolean "ok"; an {"ok":false,...} reply is a value, not
// an Error). Errors: no such socket / connection refused ("no VMM is
// listening on PATH ..."), no reply within `timeout` (covers connecting,
// sending and receiving), the VMM closing the connection without a reply,
// a malformed or overlong reply.
Result<nlohmann::json> control_request(const std::string& socket_path, const nlohmann::json& request,
                                       std::chrono::milliseconds timeout);

}  // namespace vvmm::control
