#include "vmm/kvm_vcpu.hpp"

#include "vmm/kvm_ioctl.hpp"
#include "vmm/kvm_uapi.hpp"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cerrno>
#include <string>

namespace vvmm::vmm {

Result<KvmVcpu> KvmVcpu::create(const KvmSystem& kvm, const KvmVm& vm, unsigned index)
{
    UniqueFd fd(::ioctl(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(index)));
    if (!fd.valid()) return errno_error("KVM_CREATE_VCPU " + std::to_string(index));
    TRY_ASSIGN(auto run, MemoryMapping::map(kvm.vcpu_mmap_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0));
    return KvmVcpu(std::move(fd), std::move(run), index);
}

Result<void> KvmVcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries)
{
    uapi::FlexBuffer<uapi::Cpuid2Header, kvm_cpuid_entry2> buf(entries.size());
    buf.header().nent = static_cast<uint32_t>(entries.size());
    std::copy(entries.begin(), entries.end(), buf.entries());
    return kvm_ioctl(fd(), uapi::kSetCpuid2, buf.data(), "KVM_SET_CPUID2");
}

Result<kvm_regs> KvmVcpu::regs() const
{
    kvm_regs r{};
    TRY(kvm_ioctl(fd(), KVM_GET_REGS, &r, "KVM_GET_REGS"));
    return r;
}
Result<void> KvmVcpu::set_regs(const kvm_regs& r) { return kvm_ioctl(fd(), KVM_SET_REGS, &r, "KVM_SET_REGS"); }

Result<kvm_sregs> KvmVcpu::sregs() const
{
    kvm_sregs s{};
    TRY(kvm_ioctl(fd(), KVM_GET_SREGS, &s, "KVM_GET_SREGS"));
    return s;
}
Result<void> KvmVcpu::set_sregs(const kvm_sregs& s) { return kvm_ioctl(fd(), KVM_SET_SREGS, &s, "KVM_SET_SREGS"); }
Result<void> KvmVcpu::set_fpu(const kvm_fpu& f) { return kvm_ioctl(fd(), KVM_SET_FPU, &f, "KVM_SET_FPU"); }

Result<void> KvmVcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs)
{
    uapi::FlexBuffer<uapi::MsrsHeader, kvm_msr_entry> buf(msrs.size());
    buf.header().nmsrs = static_cast<uint32_t>(msrs.size());
    std::copy(msrs.begin(), msrs.end(), buf.entries());
    const int n = ::ioctl(fd(), uapi::kSetMsrs, buf.data());
    if (n < 0) return errno_error("KVM_SET_MSRS");
    if (static_cast<size_t>(n) != msrs.size())
        return Error("KVM_SET_MSRS: KVM refused MSR 0x" + [&] {
            char b[16];
            std::snprintf(b, sizeof b, "%x", msrs[static_cast<size_t>(n)].index);
            return std::string(b);
        }());
    return ok();
}

Result<kvm_lapic_state> KvmVcpu::lapic() const
{
    kvm_lapic_state s{};
    TRY(kvm_ioctl(fd(), KVM_GET_LAPIC, &s, "KVM_GET_LAPIC"));
    return s;
}
Result<void> KvmVcpu::set_lapic(const kvm_lapic_state& s) { return kvm_ioctl(fd(), KVM_SET_LAPIC, &s, "KVM_SET_LAPIC"); }

Result<void> KvmVcpu::note_paused()
{
    // EINVAL: the guest never enabled kvmclock.
    if (::ioctl(fd(), KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL) return errno_error("KVM_KVMCLOCK_CTRL");
    return ok();
}

}  // namespace vvmm::vmm
