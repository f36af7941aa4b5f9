#include "coord/cluster_request.hpp"

#include <array>
#include <initializer_list>

namespace vvmm::coord {
namespace {

using nlohmann::json;

constexpr std::array<const char*, 3> kCommandNames = {"status", "list", "checkpoint"};

// Peer-supplied text echoed in an error stays short.
std::string quoted(const std::string& s)
{
    constexpr size_t kMax = 64;
    return "'" + (s.size() <= kMax ? s : s.substr(0, kMax) + "...") + "'";
}

Result<void> only_fields(const json& j, std::initializer_list<const char*> allowed, const std::string& what)
{
    for (const auto& [key, value] : j.items()) {
        bool known = false;
        for (const char* a : allowed) known |= key == a;
        if (!known) return Error("unknown field " + quoted(key) + " for " + what);
    }
    return ok();
}

Result<ckpt::CheckpointMode> mode_of(const json& v)
{
    if (!v.is_string()) return Error("'mode' must be a string");
    const std::string& m = v.get_ref<const std::string&>();
    auto parsed = ckpt::parse_mode(m);
    if (!parsed) return Error(std::string("'mode' must be ") + ckpt::kCheckpointModesText + ", not " + quoted(m));
    return parsed.value();
}

Result<bool> incremental_of(const json& j)
{
    const auto it = j.find("incremental");
    if (it == j.end()) return false;
    if (!it->is_boolean()) return Error("'incremental' must be true or false");
    return it->get<bool>();
}

// A whole number of `unit`s in 1 .. kMaxEpochTimeout; absent: kDefaultEpochTimeout.
template <typename Unit>
Result<Unit> timeout_of(const json& j, const char* key)
{
    const auto it = j.find(key);
    if (it == j.end()) return std::chrono::duration_cast<Unit>(kDefaultEpochTimeout);
    const uint64_t max = static_cast<uint64_t>(std::chrono::duration_cast<Unit>(kMaxEpochTimeout).count());
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || it->get<uint64_t>() > max)
        return Error(std::string("'") + key + "' is out of range (1.." + std::to_string(max) + ")");
    return Unit(it->get<uint64_t>());
}

}  // namespace

Result<ClusterRequest> parse_cluster_request(const json& request)
{
    if (!request.is_object()) return Error("request must be a JSON object");
    const auto cmd = request.find("cmd");
    if (cmd == request.end() || !cmd->is_string()) return Error("missing \"cmd\"");
    const std::string& name = cmd->get_ref<const std::string&>();
    ClusterRequest out;
    size_t i = 0;
    while (i < kCommandNames.size() && name != kCommandNames[i]) ++i;
    if (i == kCommandNames.size()) return Error("unknown command " + quoted(name) + " (status, list, checkpoint)");
    out.cmd = static_cast<ClusterCommand>(i);
    if (out.cmd != ClusterCommand::checkpoint) {
        TRY(only_fields(request, {"cmd"}, name));
        return out;
    }
    TRY(only_fields(request, {"cmd", "mode", "incremental", "timeout_s"}, name));
    if (const auto mode = request.find("mode"); mode != request.end()) {
        TRY_ASSIGN(out.mode, mode_of(*mode));
    }
    TRY_ASSIGN(out.incremental, incremental_of(request));
    TRY_ASSIGN(out.timeout, timeout_of<std::chrono::seconds>(request, "timeout_s"));
    return out;
}

json to_json(const ClusterRequest& request)
{
    json j = {{"cmd", kCommandNames[static_cast<size_t>(request.cmd)]}};
    if (request.cmd != ClusterCommand::checkpoint) return j;
    if (request.mode) j["mode"] = ckpt::mode_name(*request.mode);
    j["incremental"] = request.incremental;
    j["timeout_s"] = static_cast<uint64_t>(request.timeout.count());
    return j;
}

Result<EpochPrepare> parse_epoch_prepare(const json& body)
{
    if (!body.is_object()) return Error("PREPARE's body must be a JSON object");
    TRY(only_fields(body, {"mode", "incremental", "timeout_ms", "initiator", "parity_base"}, "PREPARE"));
    EpochPrepare out;
    const auto mode = body.find("mode");
    if (mode == body.end()) return Error("PREPARE has no 'mode'");
    TRY_ASSIGN(out.mode, mode_of(*mode));
    TRY_ASSIGN(out.incremental, incremental_of(body));
    TRY_ASSIGN(out.timeout, timeout_of<std::chrono::milliseconds>(body, "timeout_ms"));
    const auto initiator = body.find("initiator");
    if (initiator == body.end() || !initiator->is_string()) return Error("PREPARE has no 'initiator'");
    out.initiator = initiator->get<std::string>();
    if (const auto base = body.find("parity_base"); base != body.end()) {
        if (!base->is_number_unsigned()) return Error("PREPARE's 'parity_base' must be an epoch number");
        out.parity_base = base->get<uint64_t>();
    }
    return out;
}

json to_json(const EpochPrepare& prepare)
{
    return {{"mode", ckpt::mode_name(prepare.mode)},
            {"incremental", prepare.incremental},
            {"timeout_ms", static_cast<uint64_t>(prepare.timeout.count())},
            {"initiator", prepare.initiator},
            {"parity_base", prepare.parity_base}};
}

}  // namespace vvmm::coord
