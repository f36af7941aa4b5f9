// A raw disk image file, opened as a VM's description names it.
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::dev {

using DiskSpec = vmm::DiskDescription;  // vmm::parse_disk_flag reads one from --disk

class DiskImage {
public:
    static Result<DiskImage> open(const DiskSpec& spec);
    int fd() const { return fd_.get(); }
    uint64_t size() const { return size_; }
    bool readonly() const { return readonly_; }
    UniqueFd release() && { return std::move(fd_); }

private:
    DiskImage(UniqueFd fd, uint64_t size, bool ro) : fd_(std::move(fd)), size_(size), readonly_(ro) {}
    UniqueFd fd_;
    uint64_t size_;
    bool readonly_;
};

}  // namespace vvmm::dev
