// The checkpoint modes and their names: the one place they are spelled (the
// control API, the cluster file, the CLI and manifests all use these).
#pragma once

#include <array>
#include <string>
#include <string_view>

#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

enum class CheckpointMode { stop, live, cow };

inline constexpr std::array<std::string_view, 3> kCheckpointModeNames = {"stop", "live", "cow"};
inline constexpr const char* kCheckpointModesText = "stop, live or cow";

inline const char* mode_name(CheckpointMode m) { return kCheckpointModeNames[static_cast<size_t>(m)].data(); }

inline Result<CheckpointMode> parse_mode(std::string_view s)
{
    for (size_t i = 0; i < kCheckpointModeNames.size(); ++i)
        if (s == kCheckpointModeNames[i]) return static_cast<CheckpointMode>(i);
    return Error("unknown checkpoint mode '" + std::string(s) + "' (expected " + kCheckpointModesText + ")");
}

}  // namespace vvmm::ckpt
