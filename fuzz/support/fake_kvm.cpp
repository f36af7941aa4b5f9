// Fuzz build only: KvmSystem and KvmVm without /dev/kvm (see fuzz_platform.hpp).
// What the devices ask of KVM is recorded and refused the way KVM refuses it.
#include <fcntl.h>

#include <cerrno>

#include "fuzz/support/fuzz_platform.hpp"
#include "vmm/kvm_system.hpp"
#include "vmm/kvm_vm.hpp"

namespace vvmm::vmm {

Result<KvmSystem> KvmSystem::open(const char*) { return KvmSystem(UniqueFd()); }

Result<KvmVm> KvmVm::create(const KvmSystem&)
{
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) return errno_error("open /dev/null");
    return KvmVm(std::move(fd));
}

Result<void> KvmVm::set_memory_region(uint32_t, uint64_t, uint64_t, void*, uint32_t) { return ok(); }

Result<void> KvmVm::set_irq_line(uint32_t, bool) { return ok(); }

Result<void> KvmVm::set_irqfd(int eventfd, uint32_t gsi, bool assign)
{
    auto& rec = fuzz::kvm_record();
    if (eventfd < 0) return errno_error("KVM_IRQFD", EBADF);
    if (!assign) {
        rec.irqfds.erase(eventfd);
        return ok();
    }
    if (rec.irqfds.count(eventfd)) return errno_error("KVM_IRQFD gsi " + std::to_string(gsi), EBUSY);
    rec.irqfds[eventfd] = gsi;
    return ok();
}

Result<void> KvmVm::set_ioeventfd(int eventfd, uint64_t addr, uint32_t, bool, bool assign)
{
    auto& rec = fuzz::kvm_record();
    if (eventfd < 0) return errno_error("KVM_IOEVENTFD", EBADF);
    const auto key = std::make_tuple(fd_.get(), addr, eventfd);
    if (!assign) {
        if (!rec.ioeventfds.erase(key)) return errno_error("KVM_IOEVENTFD", ENOENT);
        return ok();
    }
    for (const auto& [vm, a, fd] : rec.ioeventfds)
        if (vm == fd_.get() && a == addr) return errno_error("KVM_IOEVENTFD", EEXIST);
    rec.ioeventfds.insert(key);
    return ok();
}

Result<void> KvmVm::set_gsi_routing(const std::vector<kvm_irq_routing_entry>& entries)
{
    constexpr size_t kMaxRoutes = 4096;  // KVM_MAX_IRQ_ROUTES
    if (entries.size() > kMaxRoutes) return errno_error("KVM_SET_GSI_ROUTING", EINVAL);
    for (const auto& e : entries)
        if (e.gsi >= kMaxRoutes) return errno_error("KVM_SET_GSI_ROUTING", EINVAL);
    auto& rec = fuzz::kvm_record();
    rec.routing_entries = entries.size();
    ++rec.routing_commits;
    return ok();
}

}  // namespace vvmm::vmm

namespace vvmm::fuzz {

vmm::KvmVm& fake_vm(unsigned index)
{
    static vmm::KvmSystem kvm = vmm::KvmSystem::open().value();
    static std::map<unsigned, vmm::KvmVm> vms;
    auto it = vms.find(index);
    if (it == vms.end()) it = vms.emplace(index, vmm::KvmVm::create(kvm).value()).first;
    return it->second;
}

KvmRecord& kvm_record()
{
    static KvmRecord record;
    return record;
}

void forget_vm(unsigned index)
{
    const int fd = fake_vm(index).fd();
    std::erase_if(kvm_record().ioeventfds, [fd](const auto& e) { return std::get<0>(e) == fd; });
}

}  // namespace vvmm::fuzz
