// Intel MultiProcessor Specification 1.4 table: how a kernel booted with
// acpi=off finds the CPUs, the IOAPIC and the ISA interrupt routing. Pure code.
#pragma once

#include <cstdint>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

inline constexpr unsigned kMaxCpus = 32;
inline constexpr unsigned kIoApicPins = 24;

// The floating pointer followed by the configuration table, ready to be
// copied to `base` in guest memory (it points to itself, so it needs to know).
Result<std::vector<uint8_t>> build_mp_table(unsigned cpus, uint32_t base);

// APIC id of the IOAPIC in the table (after the CPUs').
inline uint8_t mp_ioapic_id(unsigned cpus) { return static_cast<uint8_t>(cpus); }

uint8_t mp_checksum(const uint8_t* data, size_t len);

}  // namespace vvmm::vmm
