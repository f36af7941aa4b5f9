// Guest RAM: one memfd mapped shared (so a checkpoint can read it and
// userfaultfd can serve it later), registered with KVM as one slot per
// RamRegion. Every device access goes through the bounds-checked span().
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "vmm/base/memory_mapping.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/kvm_vm.hpp"
#include "vmm/memory_layout.hpp"

namespace vvmm::vmm {

class GuestMemory {
public:
    // `huge_pages`: back RAM with 2 MiB hugetlbfs pages (they must be
    // reserved in /proc/sys/vm/nr_hugepages). Checkpoints then write-protect
    // and restore memory per 2 MiB page instead of per 4 KiB.
    static Result<GuestMemory> create(uint64_t size, bool huge_pages = false);
    bool huge_pages() const { return huge_pages_; }

    Result<void> register_with(KvmVm& vm) const;
    uint64_t size() const { return size_; }
    const std::vector<RamRegion>& regions() const { return regions_; }

    // Host view of [gpa, gpa+len) if it lies wholly inside one RAM region.
    // A guest-supplied address that is out of range yields an error, never a
    // pointer outside the mapping.
    Result<std::span<uint8_t>> span(uint64_t gpa, uint64_t len) const;
    int memfd() const { return fd_.get(); }
    // Host view of the whole memfd (offset = RamRegion::file_offset + ...).
    uint8_t* host_base() const { return mapping_.data(); }

    // KVM's dirty log only sees writes made by vCPUs. vvmm's own threads
    // (virtio-blk reads, virtio-net RX, used rings) write guest memory too;
    // they record those pages here so incremental and live checkpoints see
    // them. Pages are indexed by memfd offset / 4 KiB.
    void mark_dirty(uint64_t gpa, uint64_t len) const;
    // The same for a host view obtained from span().
    void mark_dirty(std::span<const uint8_t> host) const;
    // Takes the pages marked since the last call (one bit per page) and clears them.
    std::vector<uint64_t> take_host_dirty() const;
    uint64_t page_count() const { return size_ / 4096; }
    // End of RAM in guest-physical space (the size of a memory image laid
    // out by guest-physical address).
    uint64_t guest_phys_end() const;
    // Guest-physical 2 MiB chunks holding any page the guest (or vvmm) ever
    // touched; the others are still holes of the memfd and read as zeros.
    // One bit per chunk of [0, guest_phys_end()).
    std::vector<bool> touched_chunks() const;
    // The guest-physical address a host address inside the mapping stands for
    // (userfaultfd reports host addresses), nullopt outside guest RAM.
    std::optional<uint64_t> gpa_of_host(uint64_t host_addr) const;
    // Host pointer of the guest page at `gpa` (page-aligned), nullptr if not RAM.
    uint8_t* host_page(uint64_t gpa) const;

private:
    GuestMemory() = default;
    UniqueFd fd_;
    MemoryMapping mapping_;
    uint64_t size_ = 0;
    bool huge_pages_ = false;
    std::vector<RamRegion> regions_;
    std::unique_ptr<std::atomic<uint64_t>[]> host_dirty_;
};

// A clear error if `size` cannot be backed on this host (bigger than its RAM
// plus swap), checked before we start a guest that would die of SIGBUS later.
Result<void> check_host_can_back(uint64_t size, uint64_t host_ram_plus_swap);
uint64_t host_ram_plus_swap();

}  // namespace vvmm::vmm
