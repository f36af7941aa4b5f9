// One KVM ioctl that returns 0 on success, as a Result naming the request.
#pragma once

#include <sys/ioctl.h>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

inline Result<void> kvm_ioctl(int fd, unsigned long request, const void* arg, const char* name)
{
    if (::ioctl(fd, request, arg) < 0) return errno_error(name);
    return ok();
}

}  // namespace vvmm::vmm
