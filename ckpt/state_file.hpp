// state.bin: every Snapshottable's section, named and versioned, in one file.
//   "VVMMSTAT" u32 format-version u32 section-count
//   per section: string name, u16 version, bytes payload
// Restoring matches sections to components by name and refuses unknown,
// missing, duplicate or too-new sections with a message that names them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/base/snapshottable.hpp"

namespace vvmm::ckpt {

inline constexpr uint32_t kStateFormatVersion = 1;

struct Section {
    std::string name;
    uint16_t version = 0;
    std::vector<uint8_t> payload;
};

// Saves every component (all must be quiesced / paused by the caller).
Result<std::vector<Section>> capture_sections(std::span<Snapshottable* const> components);
std::vector<uint8_t> encode_state(const std::vector<Section>& sections);
Result<std::vector<Section>> decode_state(std::span<const uint8_t> bytes);
// Every component gets its section; every section must have its component.
Result<void> restore_sections(const std::vector<Section>& sections, std::span<Snapshottable* const> components);

}  // namespace vvmm::ckpt
