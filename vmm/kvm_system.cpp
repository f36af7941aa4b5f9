#include "vmm/kvm_system.hpp"

#include "vmm/kvm_uapi.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <string>

namespace vvmm::vmm {

Result<KvmSystem> KvmSystem::open(const char* path)
{
    UniqueFd fd(::open(path, O_RDWR | O_CLOEXEC));
    if (!fd.valid()) {
        const int err = errno;
        if (err == ENOENT)
            return Error(std::string(path) + " does not exist: this host has no KVM (load kvm_intel/kvm_amd, or enable nested virtualization)");
        if (err == EACCES || err == EPERM)
            return Error(std::string("no permission to open ") + path + " (run as root or join the 'kvm' group)");
        return errno_error(std::string("cannot open ") + path, err);
    }
    const int version = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
    if (version != KVM_API_VERSION)
        return Error("KVM API version " + std::to_string(version) + " is not supported (need " +
                     std::to_string(KVM_API_VERSION) + ")");
    KvmSystem sys(std::move(fd));
    struct Required { long cap; const char* name; };
    static const Required required[] = {
        {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
        {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
        {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
        {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
        {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    };
    for (const auto& r : required)
        if (sys.check_extension(r.cap) <= 0) return Error(std::string("KVM lacks the required capability ") + r.name);
    const int mmap_size = ::ioctl(sys.fd(), KVM_GET_VCPU_MMAP_SIZE, 0);
    if (mmap_size <= 0) return errno_error("KVM_GET_VCPU_MMAP_SIZE");
    sys.vcpu_mmap_size_ = static_cast<size_t>(mmap_size);
    return sys;
}

int KvmSystem::check_extension(long cap) const { return ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap); }

Result<std::vector<kvm_cpuid_entry2>> KvmSystem::supported_cpuid() const
{
    // The kernel tells us with E2BIG when the buffer is too small.
    for (size_t n = 64; n <= 4096; n *= 2) {
        uapi::FlexBuffer<uapi::Cpuid2Header, kvm_cpuid_entry2> buf(n);
        buf.header().nent = static_cast<uint32_t>(n);
        if (::ioctl(fd_.get(), uapi::kGetSupportedCpuid, buf.data()) == 0)
            return std::vector<kvm_cpuid_entry2>(buf.entries(), buf.entries() + buf.header().nent);
        if (errno != E2BIG) return errno_error("KVM_GET_SUPPORTED_CPUID");
    }
    return Error("KVM_GET_SUPPORTED_CPUID: too many entries");
}

Result<std::vector<uint32_t>> KvmSystem::msr_index_list() const
{
    uapi::MsrListHeader probe{};
    if (::ioctl(fd_.get(), uapi::kGetMsrIndexList, &probe) < 0 && errno != E2BIG)
        return errno_error("KVM_GET_MSR_INDEX_LIST");
    uapi::FlexBuffer<uapi::MsrListHeader, uint32_t> buf(probe.nmsrs);
    buf.header().nmsrs = probe.nmsrs;
    if (::ioctl(fd_.get(), uapi::kGetMsrIndexList, buf.data()) < 0) return errno_error("KVM_GET_MSR_INDEX_LIST");
    return std::vector<uint32_t>(buf.entries(), buf.entries() + buf.header().nmsrs);
}

}  // namespace vvmm::vmm
