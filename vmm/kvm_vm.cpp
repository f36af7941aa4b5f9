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

namespace vvmm::vmm {

Result<std::vector<uint64_t>> KvmVm::dirty_log(uint32_t slot, uint64_t slot_size)
{
    // KVM writes ALIGN(pages, 64) bits.
    std::vector<uint64_t> bitmap((slot_size / 4096 + 63) / 64);
    kvm_dirty_log log{};
    log.slot = slot;
    log.dirty_bitmap = bitmap.data();
    if (::ioctl(fd_.get(), KVM_GET_DIRTY_LOG, &log) < 0)
        return errno_error("KVM_GET_DIRTY_LOG slot " + std::to_string(slot));
    return bitmap;
}

Result<void> KvmVm::enable_manual_dirty_log_protect(const KvmSystem& kvm)
{
    const int caps = kvm.check_extension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if (!(caps & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE))
        return Error("KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
    cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE;  // not INITIALLY_SET: start clean
    if (::ioctl(fd_.get(), KVM_ENABLE_CAP, &cap) < 0) return errno_error("KVM_ENABLE_CAP MANUAL_DIRTY_LOG_PROTECT2");
    return ok();
}

Result<void> KvmVm::clear_dirty_log(uint32_t slot, uint64_t first_page, uint32_t num_pages,
                                    const std::vector<uint64_t>& bitmap)
{
    if (bitmap.size() * 64 < num_pages) return Error("KVM_CLEAR_DIRTY_LOG: bitmap shorter than num_pages");
    kvm_clear_dirty_log c{};
    c.slot = slot;
    c.first_page = first_page;
    c.num_pages = num_pages;
    c.dirty_bitmap = const_cast<uint64_t*>(bitmap.data());  // KVM only reads it
    if (::ioctl(fd_.get(), KVM_CLEAR_DIRTY_LOG, &c) < 0)
        return errno_error("KVM_CLEAR_DIRTY_LOG slot " + std::to_string(slot));
    return ok();
}

}  // namespace vvmm::vmm
