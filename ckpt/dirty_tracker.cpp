#include "ckpt/dirty_tracker.hpp"

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <vector>

namespace vvmm::ckpt {

Result<void> DirtyTracker::start()
{
    if (active_) return ok();
    uint32_t slot = 0;
    for (const auto& r : memory_.regions())
        TRY(vm_.set_memory_region(slot++, r.guest_phys, r.size, memory_.host_base() + r.file_offset, KVM_MEM_LOG_DIRTY_PAGES));
    active_ = true;
    carry_ = Bitmap(memory_.guest_phys_end() / 4096);
    // Start from a clean slate on both logs.
    return take().ok() ? ok() : Error("clearing the dirty logs failed");
}

Result<Bitmap> DirtyTracker::take()
{
    if (!active_) return Error("dirty page tracking is off");
    Bitmap out(memory_.guest_phys_end() / 4096);
    TRY(add_kvm_log(out));
    add_host_log(out);
    out.merge(carry_);
    carry_.clear();
    return out;
}

Result<void> DirtyTracker::add_kvm_log(Bitmap& out)
{
    uint32_t slot = 0;
    for (const auto& r : memory_.regions()) {
        std::vector<uint64_t> bits((r.size / 4096 + 63) / 64, 0);
        kvm_dirty_log log{};
        log.slot = slot++;
        log.dirty_bitmap = bits.data();
        if (::ioctl(vm_.fd(), KVM_GET_DIRTY_LOG, &log) < 0) return errno_error("KVM_GET_DIRTY_LOG");
        out.merge_words(bits, r.guest_phys / 4096);
    }
    return ok();
}

void DirtyTracker::add_host_log(Bitmap& out)
{
    // The host log is indexed by memfd page; translate per RAM region.
    const std::vector<uint64_t> host = memory_.take_host_dirty();
    for (const auto& r : memory_.regions()) {
        const uint64_t first_word = r.file_offset / 4096 / 64, words = (r.size / 4096 + 63) / 64;
        out.merge_words({host.begin() + static_cast<ptrdiff_t>(first_word),
                         host.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(first_word + words, host.size()))},
                        r.guest_phys / 4096);
    }
}

}  // namespace vvmm::ckpt
