// Which guest pages changed: KVM's dirty log (writes by vCPUs) merged with
// the pages vvmm's own threads wrote (GuestMemory::mark_dirty). Once
// started it stays on, so every checkpoint can be incremental to the last.
#pragma once

#include "vmm/base/bitmap.hpp"
#include "vmm/base/result.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::ckpt {

class DirtyTracker {
public:
    DirtyTracker(vmm::KvmVm& vm, const vmm::GuestMemory& memory) : vm_(vm), memory_(memory) {}

    bool active() const { return active_; }
    // Turns KVM dirty logging on for every RAM slot; what was written before
    // is forgotten.
    Result<void> start();
    // Pages (guest-physical page numbers) written since the previous take()
    // or start(). Fails if not active.
    Result<Bitmap> take();
    // A checkpoint that failed gives its pages back, so the next incremental
    // checkpoint still contains them.
    void give_back(const Bitmap& pages) { carry_.merge(pages); }

private:
    Result<void> add_kvm_log(Bitmap& out);
    void add_host_log(Bitmap& out);

    vmm::KvmVm& vm_;
    const vmm::GuestMemory& memory_;
    bool active_ = false;
    Bitmap carry_;
};

}  // namespace vvmm::ckpt
