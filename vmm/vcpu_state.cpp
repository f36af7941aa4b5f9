#include "vmm/vcpu_state.hpp"

#include <sys/ioctl.h>

#include "vmm/kvm_ioctl.hpp"

#include <algorithm>
#include <cstdio>

#include "vmm/kvm_uapi.hpp"

namespace vvmm::vmm {
namespace {

// struct kvm_xsave's fixed part (the ioctl numbers encode 4096 bytes); KVM
// reads and writes KVM_CAP_XSAVE2 bytes, which may be more.
struct XsaveFixed {
    uint32_t region[1024];
};
constexpr unsigned long kGetXsave2 = _IOR(KVMIO, 0xcf, XsaveFixed);
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, XsaveFixed);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, XsaveFixed);
constexpr uint32_t kMsrTscDeadline = 0x6e0;
constexpr size_t kMaxCpuid = 256;
constexpr size_t kMaxMsrs = 1024;

size_t xsave_size(int vm_fd)
{
    const int n = ::ioctl(vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    return n > static_cast<int>(sizeof(XsaveFixed)) ? static_cast<size_t>(n) : sizeof(XsaveFixed);
}

std::string hex(uint32_t v)
{
    char b[16];
    std::snprintf(b, sizeof b, "0x%x", v);
    return b;
}

Result<void> set_msr_list(KvmVcpu& vcpu, const std::vector<kvm_msr_entry>& msrs)
{
    if (msrs.empty()) return ok();
    return vcpu.set_msrs(msrs);
}

}  // namespace

VcpuState::VcpuState(KvmVcpu& vcpu, int vm_fd, std::vector<uint32_t> msr_indices)
    : vcpu_(vcpu), vm_fd_(vm_fd), name_("vcpu" + std::to_string(vcpu.index())), msr_indices_(std::move(msr_indices))
{
}

// KVM_GET_MSRS stops at the first MSR it cannot read; such MSRs are dropped
// once (they depend on host and CPUID, not on the guest) and the rest read.
Result<std::vector<kvm_msr_entry>> VcpuState::read_msrs() const
{
    for (;;) {
        uapi::FlexBuffer<uapi::MsrsHeader, kvm_msr_entry> buf(msr_indices_.size());
        buf.header().nmsrs = static_cast<uint32_t>(msr_indices_.size());
        for (size_t i = 0; i < msr_indices_.size(); ++i) buf.entries()[i].index = msr_indices_[i];
        const int n = ::ioctl(vcpu_.fd(), uapi::kGetMsrs, buf.data());
        if (n < 0) return errno_error("KVM_GET_MSRS");
        if (static_cast<size_t>(n) == msr_indices_.size() || msr_indices_checked_) {
            if (static_cast<size_t>(n) != msr_indices_.size())
                return Error("KVM_GET_MSRS: MSR " + hex(msr_indices_[static_cast<size_t>(n)]) + " became unreadable");
            msr_indices_checked_ = true;
            return std::vector<kvm_msr_entry>(buf.entries(), buf.entries() + n);
        }
        msr_indices_.erase(msr_indices_.begin() + n);
    }
}

Result<void> VcpuState::save(StateWriter& out) const
{
    const int fd = vcpu_.fd();
    uapi::FlexBuffer<uapi::Cpuid2Header, kvm_cpuid_entry2> cpuid(kMaxCpuid);
    cpuid.header().nent = kMaxCpuid;
    TRY(kvm_ioctl(fd, uapi::kGetCpuid2, cpuid.data(), "KVM_GET_CPUID2"));
    out.u32(cpuid.header().nent);
    for (uint32_t i = 0; i < cpuid.header().nent; ++i) out.pod(cpuid.entries()[i]);

    TRY_ASSIGN(auto regs, vcpu_.regs());
    out.pod(regs);
    TRY_ASSIGN(auto sregs, vcpu_.sregs());
    out.pod(sregs);

    std::vector<uint8_t> xsave(xsave_size(vm_fd_));
    TRY(kvm_ioctl(fd, xsave.size() > sizeof(XsaveFixed) ? kGetXsave2 : kGetXsave, xsave.data(), "KVM_GET_XSAVE2"));
    out.bytes(xsave);

    kvm_xcrs xcrs{};
    TRY(kvm_ioctl(fd, KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS"));
    out.pod(xcrs);

    TRY_ASSIGN(auto msrs, read_msrs());
    out.u32(static_cast<uint32_t>(msrs.size()));
    for (const auto& m : msrs) {
        out.u32(m.index);
        out.u64(m.data);
    }

    TRY_ASSIGN(auto lapic, vcpu_.lapic());
    out.pod(lapic);
    kvm_mp_state mp{};
    TRY(kvm_ioctl(fd, KVM_GET_MP_STATE, &mp, "KVM_GET_MP_STATE"));
    out.pod(mp);
    kvm_vcpu_events events{};
    TRY(kvm_ioctl(fd, KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS"));
    out.pod(events);
    kvm_debugregs dregs{};
    TRY(kvm_ioctl(fd, KVM_GET_DEBUGREGS, &dregs, "KVM_GET_DEBUGREGS"));
    out.pod(dregs);
    return ok();
}

// The order follows what KVM needs: CPUID before anything that depends on
// it, MSRs after sregs (EFER), the TSC deadline after the LAPIC that arms it,
// events and MP state last.
Result<void> VcpuState::restore(StateReader& in, uint16_t)
{
    const int fd = vcpu_.fd();
    TRY_ASSIGN(uint32_t nent, in.u32());
    if (nent == 0 || nent > kMaxCpuid) return in.err("bad CPUID entry count " + std::to_string(nent));
    std::vector<kvm_cpuid_entry2> cpuid;
    for (uint32_t i = 0; i < nent; ++i) {
        TRY_ASSIGN(auto e, in.pod<kvm_cpuid_entry2>());
        cpuid.push_back(e);
    }
    TRY_ASSIGN(auto regs, in.pod<kvm_regs>());
    TRY_ASSIGN(auto sregs, in.pod<kvm_sregs>());
    TRY_ASSIGN(auto xsave_bytes, in.bytes(1 << 20));
    const size_t xsize = xsave_size(vm_fd_);
    if (xsave_bytes.size() < sizeof(XsaveFixed) || xsave_bytes.size() > xsize)
        return in.err("XSAVE area of " + std::to_string(xsave_bytes.size()) + " bytes does not fit this host (" +
                      std::to_string(xsize) + ")");
    std::vector<uint8_t> xsave(xsize, 0);
    std::copy(xsave_bytes.begin(), xsave_bytes.end(), xsave.begin());
    TRY_ASSIGN(auto xcrs, in.pod<kvm_xcrs>());
    TRY_ASSIGN(uint32_t nmsrs, in.u32());
    if (nmsrs > kMaxMsrs) return in.err("bad MSR count " + std::to_string(nmsrs));
    std::vector<kvm_msr_entry> msrs, late_msrs;
    for (uint32_t i = 0; i < nmsrs; ++i) {
        kvm_msr_entry e{};
        TRY_ASSIGN(e.index, in.u32());
        TRY_ASSIGN(e.data, in.u64());
        (e.index == kMsrTscDeadline ? late_msrs : msrs).push_back(e);
    }
    TRY_ASSIGN(auto lapic, in.pod<kvm_lapic_state>());
    TRY_ASSIGN(auto mp, in.pod<kvm_mp_state>());
    TRY_ASSIGN(auto events, in.pod<kvm_vcpu_events>());
    TRY_ASSIGN(auto dregs, in.pod<kvm_debugregs>());
    TRY(in.expect_end());

    TRY(vcpu_.set_cpuid(cpuid));
    TRY(vcpu_.set_regs(regs));
    TRY(kvm_ioctl(fd, kSetXsave, xsave.data(), "KVM_SET_XSAVE"));
    TRY(kvm_ioctl(fd, KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS"));
    TRY(vcpu_.set_sregs(sregs));
    TRY(set_msr_list(vcpu_, msrs));
    TRY(kvm_ioctl(fd, KVM_SET_MP_STATE, &mp, "KVM_SET_MP_STATE"));
    TRY(vcpu_.set_lapic(lapic));
    TRY(set_msr_list(vcpu_, late_msrs));
    TRY(kvm_ioctl(fd, KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS"));
    TRY(kvm_ioctl(fd, KVM_SET_DEBUGREGS, &dregs, "KVM_SET_DEBUGREGS"));
    return ok();
}

}  // namespace vvmm::vmm
