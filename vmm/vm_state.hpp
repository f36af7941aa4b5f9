// The saved state of the in-kernel devices of a KVM VM: the PIC pair, the
// IOAPIC, the PIT and kvmclock, as the checkpoint section "kvm-vm".
#pragma once

#include <linux/kvm.h>

#include "vmm/base/snapshottable.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::vmm {

// How kvmclock is restored: as saved (guest time continues from the
// checkpoint instant, no jump) or advanced by the host time that passed.
enum class ClockMode { keep, advance };

class VmState : public Snapshottable {
public:
    explicit VmState(KvmVm& vm) : vm_(vm) {}

    std::string_view section() const override { return "kvm-vm"; }
    uint16_t version() const override { return 1; }
    Result<void> save(StateWriter& out) const override;
    Result<void> restore(StateReader& in, uint16_t version) override;
    void set_clock_mode(ClockMode m) { clock_mode_ = m; }

private:
    KvmVm& vm_;
    ClockMode clock_mode_ = ClockMode::keep;
};

}  // namespace vvmm::vmm
