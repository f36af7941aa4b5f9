// What a cluster epoch adds to one VM's checkpoint: the cut through the
// network is taken at the very instant the VM's state is captured, and the
// frames in flight across it are saved with the checkpoint. Implemented by
// the peer mesh (see net/channel_cut.hpp for the rules).
#pragma once

#include <cstdint>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

class EpochCut {
public:
    virtual ~EpochCut() = default;
    virtual uint64_t epoch() const = 0;
    // Before the VM pauses: no frame reaches the guest until cut() or
    // release(), so none can land between the state capture and the cut.
    virtual void hold_delivery() = 0;
    // The VM is paused and its state captured: markers go out ahead of any
    // later frame, frames in flight start being recorded, delivery resumes.
    virtual void cut() = 0;
    // The checkpoint failed before cut(): delivery resumes.
    virtual void release() = 0;
    // After cut(): waits until every peer's marker is in (or the epoch is
    // aborted, or times out) and returns the encoded channel state.
    virtual Result<std::vector<uint8_t>> channel_state() = 0;
};

}  // namespace vvmm::ckpt
