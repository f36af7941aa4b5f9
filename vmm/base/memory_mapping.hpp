// Owning mmap() region.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <utility>

#include "vmm/base/result.hpp"

namespace vvmm {

class MemoryMapping {
public:
    MemoryMapping() = default;
    static Result<MemoryMapping> map(size_t size, int prot, int flags, int fd, off_t offset)
    {
        void* p = ::mmap(nullptr, size, prot, flags, fd, offset);
        if (p == MAP_FAILED) return errno_error("mmap of " + std::to_string(size) + " bytes");
        return MemoryMapping(static_cast<uint8_t*>(p), size);
    }
    MemoryMapping(MemoryMapping&& o) noexcept
        : base_(std::exchange(o.base_, nullptr)), size_(std::exchange(o.size_, 0)) {}
    MemoryMapping& operator=(MemoryMapping&& o) noexcept
    {
        if (this != &o) {
            reset();
            base_ = std::exchange(o.base_, nullptr);
            size_ = std::exchange(o.size_, 0);
        }
        return *this;
    }
    MemoryMapping(const MemoryMapping&) = delete;
    MemoryMapping& operator=(const MemoryMapping&) = delete;
    ~MemoryMapping() { reset(); }

    uint8_t* data() const { return base_; }
    size_t size() const { return size_; }

private:
    MemoryMapping(uint8_t* base, size_t size) : base_(base), size_(size) {}
    void reset()
    {
        if (base_) ::munmap(base_, size_);
        base_ = nullptr;
        size_ = 0;
    }
    uint8_t* base_ = nullptr;
    size_t size_ = 0;
};

}  // namespace vvmm
