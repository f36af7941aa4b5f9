#include "control/control_request.hpp"

#include <array>

namespace vvmm::control {
namespace {

using nlohmann::json;

constexpr std::array<const char*, 5> kCommandNames = {"status", "pause", "resume", "checkpoint", "stop"};

// Client-supplied text echoed in an error stays short.
std::string quoted(const std::string& s)
{
    constexpr size_t kMax = 64;
    return "'" + (s.size() <= kMax ? s : s.substr(0, kMax) + "...") + "'";
}

Result<ControlCommand> command_of(const json& request)
{
    const auto it = request.find("cmd");
    if (it == request.end()) return Error("missing \"cmd\"");
    if (!it->is_string()) return Error("\"cmd\" must be a string");
    const std::string& name = it->get_ref<const std::string&>();
    for (size_t i = 0; i < kCommandNames.size(); ++i)
        if (name == kCommandNames[i]) return static_cast<ControlCommand>(i);
    return Error("unknown command " + quoted(name) + " (expected status, pause, resume, checkpoint or stop)");
}

Result<void> parse_checkpoint_fields(const json& request, ControlRequest& out)
{
    // No "dir": the VM's own checkpoint directory (vvmm run --checkpoint-dir).
    if (const auto dir = request.find("dir"); dir != request.end()) {
        if (!dir->is_string()) return Error("\"dir\" must be a string");
        out.dir = dir->get<std::string>();
        if (out.dir.empty()) return Error("\"dir\" must not be empty");
        if (out.dir.find('\0') != std::string::npos) return Error("\"dir\" must not contain NUL");
    }

    if (const auto mode = request.find("mode"); mode != request.end()) {
        if (!mode->is_string()) return Error("\"mode\" must be a string");
        const std::string& m = mode->get_ref<const std::string&>();
        auto parsed = ckpt::parse_mode(m);
        if (!parsed) return Error(std::string("\"mode\" must be ") + ckpt::kCheckpointModesText + ", not " + quoted(m));
        out.mode = parsed.value();
    }
    if (const auto inc = request.find("incremental"); inc != request.end()) {
        if (!inc->is_boolean()) return Error("\"incremental\" must be true or false");
        out.incremental = inc->get<bool>();
    }
    return ok();
}

}  // namespace

const char* command_name(ControlCommand cmd) { return kCommandNames[static_cast<size_t>(cmd)]; }

Result<ControlRequest> parse_control_request(const json& request)
{
    if (!request.is_object()) return Error("request must be a JSON object");
    ControlRequest out;
    TRY_ASSIGN(out.cmd, command_of(request));
    const bool checkpoint = out.cmd == ControlCommand::checkpoint;
    for (const auto& [key, value] : request.items()) {
        if (key == "cmd") continue;
        if (!checkpoint || (key != "dir" && key != "mode" && key != "incremental"))
            return Error("unknown field " + quoted(key) + " for " + command_name(out.cmd));
    }
    if (checkpoint) {
        TRY(parse_checkpoint_fields(request, out));
    }
    return out;
}

json to_json(const ControlRequest& request)
{
    json j = {{"cmd", command_name(request.cmd)}};
    if (request.cmd == ControlCommand::checkpoint) {
        if (!request.dir.empty()) j["dir"] = request.dir;
        j["mode"] = ckpt::mode_name(request.mode);
        j["incremental"] = request.incremental;
    }
    return j;
}

}  // namespace vvmm::control
