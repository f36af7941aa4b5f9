// KVM ioctls whose argument ends in a flexible array. Debian 12's uapi
// headers declare those arrays with __DECLARE_FLEX_ARRAY, which in C++ adds an
// empty member: sizeof() and the array offset then differ from the kernel's C
// layout, and so does the ioctl number (it encodes the size). These are the
// C layouts, spelled out.
#pragma once

#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace vvmm::vmm::uapi {

struct Cpuid2Header {
    uint32_t nent;
    uint32_t padding;
};
struct MsrsHeader {
    uint32_t nmsrs;
    uint32_t pad;
};
struct MsrListHeader {
    uint32_t nmsrs;
};
struct IrqRoutingHeader {
    uint32_t nr;
    uint32_t flags;
};
static_assert(sizeof(IrqRoutingHeader) == 8);
static_assert(sizeof(Cpuid2Header) == 8 && sizeof(MsrsHeader) == 8 && sizeof(MsrListHeader) == 4);

inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, Cpuid2Header);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, Cpuid2Header);
inline constexpr unsigned long kGetCpuid2 = _IOWR(KVMIO, 0x91, Cpuid2Header);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, MsrsHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, MsrsHeader);
inline constexpr unsigned long kSetGsiRouting = _IOW(KVMIO, 0x6a, IrqRoutingHeader);

// A header followed by `n` entries, laid out as the kernel expects.
template <typename Header, typename Entry>
class FlexBuffer {
public:
    explicit FlexBuffer(size_t n) : bytes_(sizeof(Header) + n * sizeof(Entry), 0) {}
    void* data() { return bytes_.data(); }
    Header& header() { return *reinterpret_cast<Header*>(bytes_.data()); }
    Entry* entries() { return reinterpret_cast<Entry*>(bytes_.data() + sizeof(Header)); }

private:
    std::vector<uint8_t> bytes_;  // vector storage is suitably aligned for both
};

}  // namespace vvmm::vmm::uapi
