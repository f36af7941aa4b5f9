// The one interface every stateful part of a VM implements so a checkpoint
// can save it and a restore can put it back. Sections are named and
// versioned: a restore refuses a section it does not know or a version newer
// than the code, with a message that says which.
#pragma once

#include <cstdint>
#include <string_view>

#include "vmm/base/result.hpp"
#include "vmm/base/state_stream.hpp"

namespace vvmm {

class Snapshottable {
public:
    virtual ~Snapshottable() = default;
    // Unique, stable name of the section ("vcpu0", "serial", "virtio-blk0").
    virtual std::string_view section() const = 0;
    // Bumped on any layout change of what save() writes.
    virtual uint16_t version() const = 0;
    // Called with every vCPU parked: finish in-flight work (block requests)
    // so the state about to be saved is complete.
    virtual Result<void> quiesce() { return ok(); }
    // Called after the state was saved (or a checkpoint failed): take new work again.
    virtual void unquiesce() {}
    // Only state, no I/O.
    virtual Result<void> save(StateWriter& out) const = 0;
    // Validate everything read; `version` is at most version().
    virtual Result<void> restore(StateReader& in, uint16_t version) = 0;
};

}  // namespace vvmm
