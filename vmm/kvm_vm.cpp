#include "vmm/kvm_vm.hpp"

#include <sys/ioctl.h>

#include "vmm/kvm_uapi.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {

Result<KvmVm> KvmVm::create(const KvmSystem& kvm)
{
    int fd = -1;
    // Retry on EINTR: a signal during VM creation is not a failure.
    do fd = ::ioctl(kvm.fd(), KVM_CREATE_VM, 0);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) return errno_error("KVM_CREATE_VM");
    KvmVm vm{UniqueFd(fd)};
    // Intel VT-x needs three pages for the real-mode TSS and one for the
    // identity map, somewhere the guest never uses; the hole just below the
    // 4 GiB BIOS area is reserved in e820 for that.
    if (::ioctl(vm.fd(), KVM_SET_IDENTITY_MAP_ADDR, &layout::kIdentityMapAddr) < 0 && errno != EINVAL)
        return errno_error("KVM_SET_IDENTITY_MAP_ADDR");
    if (::ioctl(vm.fd(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(layout::kTssAddr)) < 0 && errno != EINVAL)
        return errno_error("KVM_SET_TSS_ADDR");
    if (::ioctl(vm.fd(), KVM_CREATE_IRQCHIP, 0) < 0) return errno_error("KVM_CREATE_IRQCHIP");
    kvm_pit_config pit{};
    pit.flags = KVM_PIT_SPEAKER_DUMMY;
    if (::ioctl(vm.fd(), KVM_CREATE_PIT2, &pit) < 0) return errno_error("KVM_CREATE_PIT2");
    return vm;
}

Result<void> KvmVm::set_memory_region(uint32_t slot, uint64_t guest_phys, uint64_t size, void* host, uint32_t flags)
{
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.flags = flags;
    region.guest_phys_addr = guest_phys;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<uint64_t>(host);
    if (::ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) < 0)
        return errno_error("KVM_SET_USER_MEMORY_REGION slot " + std::to_string(slot));
    return ok();
}

Result<void> KvmVm::set_irq_line(uint32_t irq, bool level)
{
    kvm_irq_level l{};
    l.irq = irq;
    l.level = level ? 1 : 0;
    if (::ioctl(fd_.get(), KVM_IRQ_LINE, &l) < 0) return errno_error("KVM_IRQ_LINE " + std::to_string(irq));
    return ok();
}

}  // namespace vvmm::vmm

namespace vvmm::vmm {

Result<void> KvmVm::set_irqfd(int eventfd, uint32_t gsi, bool assign)
{
    kvm_irqfd req{};
    req.fd = static_cast<uint32_t>(eventfd);
    req.gsi = gsi;
    req.flags = assign ? 0 : KVM_IRQFD_FLAG_DEASSIGN;
    if (::ioctl(fd_.get(), KVM_IRQFD, &req) < 0) return errno_error("KVM_IRQFD gsi " + std::to_string(gsi));
    return ok();
}

Result<void> KvmVm::set_ioeventfd(int eventfd, uint64_t addr, uint32_t len, bool mmio, bool assign)
{
    kvm_ioeventfd req{};
    req.addr = addr;
    req.len = len;
    req.fd = eventfd;
    req.flags = (mmio ? 0 : KVM_IOEVENTFD_FLAG_PIO) | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN);
    if (::ioctl(fd_.get(), KVM_IOEVENTFD, &req) < 0) return errno_error("KVM_IOEVENTFD");
    return ok();
}

Result<void> KvmVm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries)
{
    uapi::FlexBuffer<uapi::IrqRoutingHeader, kvm_irq_routing_entry> buf(entries.size());
    buf.header().nr = static_cast<uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries());
    if (::ioctl(fd_.get(), uapi::kSetGsiRouting, buf.data()) < 0) return errno_error("KVM_SET_GSI_ROUTING");
    return ok();
}

}  // namespace vvmm::vmm
