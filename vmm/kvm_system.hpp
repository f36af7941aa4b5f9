// The /dev/kvm handle: API version check, capabilities, supported CPUID.
#pragma once

#include <linux/kvm.h>

#include <memory>
#include <vector>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::vmm {

class KvmSystem {
public:
    // Opens /dev/kvm (or `path`) and checks the API version and the
    // capabilities vvmm cannot work without.
    static Result<KvmSystem> open(const char* path = "/dev/kvm");

    int fd() const { return fd_.get(); }
    int check_extension(long cap) const;
    size_t vcpu_mmap_size() const { return vcpu_mmap_size_; }
    Result<std::vector<kvm_cpuid_entry2>> supported_cpuid() const;
    Result<std::vector<uint32_t>> msr_index_list() const;

private:
    explicit KvmSystem(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
    size_t vcpu_mmap_size_ = 0;
};

}  // namespace vvmm::vmm
