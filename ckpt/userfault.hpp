// userfaultfd, owned: write-protect tracking for copy-on-write checkpoints
// (a guest or host write to a protected page blocks until the checkpointer
// has saved the page) and missing-page serving for lazy restore.
//
// Works for KVM guest accesses too: the fd is created without
// UFFD_USER_MODE_ONLY, so faults taken inside the kernel (KVM's
// get_user_pages, copy_to_user of emulated guest writes) are reported as well.
#pragma once

#include <linux/userfaultfd.h>

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {

// Feature bits newer than Debian 12's uapi headers (Linux 6.4+).
inline constexpr uint64_t kUffdFeatureWpUnpopulated = 1ull << 13;
inline constexpr uint64_t kUffdFeatureWpAsync = 1ull << 15;

// Human-readable names of the bits set in `features` ("MISSING_SHMEM|...").
std::string uffd_feature_names(uint64_t features);

enum class UffdMode : uint64_t {
    missing = UFFDIO_REGISTER_MODE_MISSING,
    wp = UFFDIO_REGISTER_MODE_WP,
    missing_wp = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
};

// A page fault event, decoded. `address` is page-aligned (no EXACT_ADDRESS).
struct UffdFault {
    uint64_t address = 0;
    bool write = false;  // the access was a write
    bool wp = false;     // a write to a write-protected page (else: missing page)
    uint32_t tid = 0;    // faulting thread, when UFFD_FEATURE_THREAD_ID was granted
};

// Decodes a message read from the fd; nullopt for non-pagefault events
// (fork/remap/remove/unmap, which we do not request).
std::optional<UffdFault> describe_event(const uffd_msg& msg);

class Userfault {
public:
    // Opens a userfaultfd (non-blocking, close-on-exec) and does the
    // UFFDIO_API handshake. Every bit of `required` must be granted, else an
    // error names the missing ones; bits of `optional` are requested when the
    // kernel has them (see has()).
    static Result<Userfault> create(uint64_t required, uint64_t optional = 0);
    // What this kernel offers, from a throw-away handshake.
    static Result<uint64_t> available_features();

    int fd() const { return fd_.get(); }
    uint64_t features() const { return features_; }
    bool has(uint64_t feature) const { return (features_ & feature) == feature; }

    // Registers [addr, addr+len) (page-aligned). Returns the UFFDIO_* ioctls
    // the range supports (bit 1 << _UFFDIO_COPY etc.).
    Result<uint64_t> register_range(void* addr, uint64_t len, UffdMode mode);
    Result<void> unregister(void* addr, uint64_t len);

    // Protects (on) or unprotects (off) the range. Unprotecting wakes the
    // threads blocked on it unless `wake` is false (then call wake()).
    Result<void> write_protect(void* addr, uint64_t len, bool on, bool wake = true);
    // Fills missing pages of [dst, dst+len) from `src` (UFFDIO_COPY). Pages
    // that are already present are skipped, not an error (another thread or
    // the zero-page path got there first). `wp` leaves the pages protected.
    // Returns the bytes actually copied.
    Result<uint64_t> copy(void* dst, const void* src, uint64_t len, bool wp = false, bool wake = true);
    // Fills missing pages with zeros; present pages are skipped.
    Result<uint64_t> zeropage(void* dst, uint64_t len, bool wake = true);
    Result<void> wake(void* addr, uint64_t len);

    // Waits up to `timeout_ms` (-1 = forever) for one event; nullopt on
    // timeout or when another reader took it.
    Result<std::optional<uffd_msg>> read_event(int timeout_ms);
    // Reads up to out.size() events once readable; 0 on timeout.
    Result<size_t> read_events(std::span<uffd_msg> out, int timeout_ms);

private:
    Userfault(UniqueFd fd, uint64_t features) : fd_(std::move(fd)), features_(features) {}
    UniqueFd fd_;
    uint64_t features_ = 0;
};

}  // namespace vvmm::ckpt
