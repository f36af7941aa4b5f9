// A raw disk image file and the --disk option that names it:
// path=FILE[,readonly=on|off][,id=SERIAL].
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::dev {

struct DiskSpec {
    std::string path;
    bool readonly = false;
    std::string id;  // serial the guest reads with GET_ID (max 20 bytes)
};

Result<DiskSpec> parse_disk_spec(const std::string& text);

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
