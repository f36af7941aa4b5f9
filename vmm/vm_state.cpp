#include "vmm/vm_state.hpp"

#include <sys/ioctl.h>

#include "vmm/kvm_ioctl.hpp"
#include <time.h>

namespace vvmm::vmm {
namespace {

uint64_t realtime_ns()
{
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ull + static_cast<uint64_t>(ts.tv_nsec);
}

constexpr uint32_t kChips[] = {KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQCHIP_IOAPIC};

}  // namespace

Result<void> VmState::save(StateWriter& out) const
{
    for (uint32_t id : kChips) {
        kvm_irqchip chip{};
        chip.chip_id = id;
        TRY(kvm_ioctl(vm_.fd(), KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP"));
        out.pod(chip);
    }
    kvm_pit_state2 pit{};
    TRY(kvm_ioctl(vm_.fd(), KVM_GET_PIT2, &pit, "KVM_GET_PIT2"));
    out.pod(pit);
    kvm_clock_data clock{};
    TRY(kvm_ioctl(vm_.fd(), KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK"));
    out.u64(clock.clock);
    // Host wall time of the capture, for --clock advance.
    out.u64((clock.flags & KVM_CLOCK_REALTIME) ? clock.realtime : realtime_ns());
    return ok();
}

Result<void> VmState::restore(StateReader& in, uint16_t)
{
    kvm_irqchip chips[3];
    for (size_t i = 0; i < 3; ++i) {
        TRY_ASSIGN(chips[i], in.pod<kvm_irqchip>());
        if (chips[i].chip_id != kChips[i]) return in.err("irqchip " + std::to_string(i) + " has a wrong id");
    }
    TRY_ASSIGN(auto pit, in.pod<kvm_pit_state2>());
    TRY_ASSIGN(uint64_t clock_ns, in.u64());
    TRY_ASSIGN(uint64_t saved_at, in.u64());
    TRY(in.expect_end());

    for (auto& chip : chips) TRY(kvm_ioctl(vm_.fd(), KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP"));
    TRY(kvm_ioctl(vm_.fd(), KVM_SET_PIT2, &pit, "KVM_SET_PIT2"));
    kvm_clock_data clock{};
    clock.clock = clock_ns;
    const uint64_t now = realtime_ns();
    if (clock_mode_ == ClockMode::advance && now > saved_at) clock.clock += now - saved_at;
    TRY(kvm_ioctl(vm_.fd(), KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK"));
    return ok();
}

}  // namespace vvmm::vmm
