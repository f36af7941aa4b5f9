// What a member of a parity set sends its parity holders for one epoch
// (diskless checkpoints, issue 12): old XOR new of every page of its
// protected image that changed since the base epoch, in runs of whole pages
// no longer than a PARITY message carries. With no base (the first epoch, or
// a re-encode) the old image is all zeros, so every non-zero page goes.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "ckpt/protected_image.hpp"
#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

struct DeltaStats {
    uint64_t pages_compared = 0;
    uint64_t pages_sent = 0;
    uint64_t bytes_sent = 0;
};

// Calls `send(offset, delta)` for each run of changed pages (at most
// `max_run` bytes, a multiple of the page size), in ascending order, and
// sets `current`'s memory checksums. Memory chunks the chain says cannot
// have changed are not read; their checksums come from `base`, whose
// memory checksums must be set (those of the base epoch). A send that
// fails stops the walk with its error.
Result<DeltaStats> image_delta(ProtectedImage& current, ProtectedImage* base, size_t max_run,
                               const std::function<Result<void>(uint64_t, std::span<const uint8_t>)>& send);

}  // namespace vvmm::ckpt
