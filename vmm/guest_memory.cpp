#include "vmm/guest_memory.hpp"

#include <linux/memfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "vmm/base/size_parse.hpp"

namespace vvmm::vmm {

namespace {

// Free 2 MiB huge pages in the pool (HugePages_Free of /proc/meminfo).
uint64_t free_huge_pages()
{
    std::ifstream in("/proc/meminfo");
    std::string key, rest;
    uint64_t n = 0;
    while (in >> key >> n) {
        std::getline(in, rest);
        if (key == "HugePages_Free:") return n;
    }
    return 0;
}

}  // namespace

Result<GuestMemory> GuestMemory::create(uint64_t size, bool huge_pages)
{
    if (size % 4096) return Error("guest memory size must be a multiple of 4 KiB");
    GuestMemory mem;
    if (huge_pages) {
        constexpr uint64_t kHuge = 2ull << 20;
        if (size % kHuge) return Error("--huge-pages needs a memory size that is a multiple of 2 MiB");
        const uint64_t free = free_huge_pages();
        if (free < size / kHuge)
            return Error("--huge-pages: " + std::to_string(size / kHuge) + " free 2 MiB huge pages needed, " +
                         std::to_string(free) + " free (raise /proc/sys/vm/nr_hugepages)");
        mem.fd_ = UniqueFd(::memfd_create("vvmm-guest-ram", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB));
    } else {
        mem.fd_ = UniqueFd(::memfd_create("vvmm-guest-ram", MFD_CLOEXEC));
    }
    mem.huge_pages_ = huge_pages;
    if (!mem.fd_.valid()) return errno_error("memfd_create for guest memory");
    if (::ftruncate(mem.fd_.get(), static_cast<off_t>(size)) < 0)
        return errno_error("cannot allocate " + format_size(size) + " of guest memory");
    TRY_ASSIGN(mem.mapping_, MemoryMapping::map(size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                                                mem.fd_.get(), 0));
    mem.size_ = size;
    mem.regions_ = ram_regions(size);
    mem.host_dirty_ = std::make_unique<std::atomic<uint64_t>[]>((size / 4096 + 63) / 64);
    return mem;
}

Result<void> GuestMemory::register_with(KvmVm& vm) const
{
    uint32_t slot = 0;
    for (const auto& r : regions_)
        TRY(vm.set_memory_region(slot++, r.guest_phys, r.size, mapping_.data() + r.file_offset));
    return ok();
}

Result<std::span<uint8_t>> GuestMemory::span(uint64_t gpa, uint64_t len) const
{
    for (const auto& r : regions_) {
        // Written to avoid overflow with hostile gpa/len.
        if (gpa >= r.guest_phys && gpa - r.guest_phys <= r.size && len <= r.size - (gpa - r.guest_phys))
            return std::span<uint8_t>(mapping_.data() + r.file_offset + (gpa - r.guest_phys), len);
    }
    std::ostringstream s;
    s << "guest address range 0x" << std::hex << gpa << "+0x" << len << " is outside guest RAM";
    return Error(s.str());
}

uint64_t GuestMemory::guest_phys_end() const
{
    uint64_t end = 0;
    for (const auto& r : regions_) end = std::max(end, r.guest_phys + r.size);
    return end;
}

std::optional<uint64_t> GuestMemory::gpa_of_host(uint64_t host_addr) const
{
    const uint64_t base = reinterpret_cast<uint64_t>(mapping_.data());
    if (host_addr < base) return std::nullopt;
    const uint64_t off = host_addr - base;
    for (const auto& r : regions_)
        if (off >= r.file_offset && off - r.file_offset < r.size) return r.guest_phys + (off - r.file_offset);
    return std::nullopt;
}

uint8_t* GuestMemory::host_page(uint64_t gpa) const
{
    for (const auto& r : regions_)
        if (gpa >= r.guest_phys && gpa - r.guest_phys < r.size) return mapping_.data() + r.file_offset + (gpa - r.guest_phys);
    return nullptr;
}

std::vector<bool> GuestMemory::touched_chunks() const
{
    constexpr uint64_t kChunk = 2ull << 20;
    std::vector<bool> out(guest_phys_end() / kChunk, huge_pages_);
    if (huge_pages_) return out;  // hugetlbfs reports no holes: treat all as touched
    for (const auto& r : regions_) {
        off_t at = static_cast<off_t>(r.file_offset);
        const off_t end = static_cast<off_t>(r.file_offset + r.size);
        while (at < end) {
            const off_t data = ::lseek(fd_.get(), at, SEEK_DATA);
            if (data < 0 || data >= end) break;
            off_t hole = ::lseek(fd_.get(), data, SEEK_HOLE);
            if (hole < 0 || hole > end) hole = end;
            for (uint64_t c = (static_cast<uint64_t>(data) - r.file_offset) / kChunk;
                 c <= (static_cast<uint64_t>(hole) - 1 - r.file_offset) / kChunk; ++c)
                out[r.guest_phys / kChunk + c] = true;
            at = hole;
        }
    }
    return out;
}

void GuestMemory::mark_dirty(uint64_t gpa, uint64_t len) const
{
    if (len == 0) return;
    for (const auto& r : regions_) {
        if (gpa < r.guest_phys || gpa - r.guest_phys >= r.size) continue;
        const uint64_t off = r.file_offset + (gpa - r.guest_phys);
        const uint64_t end = off + std::min(len, r.size - (gpa - r.guest_phys));
        for (uint64_t page = off / 4096; page <= (end - 1) / 4096; ++page)
            host_dirty_[page / 64].fetch_or(1ull << (page % 64), std::memory_order_relaxed);
        return;
    }
}

void GuestMemory::mark_dirty(std::span<const uint8_t> host) const
{
    if (host.empty() || host.data() < mapping_.data() || host.data() + host.size() > mapping_.data() + size_) return;
    const uint64_t off = static_cast<uint64_t>(host.data() - mapping_.data());
    for (uint64_t page = off / 4096; page <= (off + host.size() - 1) / 4096; ++page)
        host_dirty_[page / 64].fetch_or(1ull << (page % 64), std::memory_order_relaxed);
}

std::vector<uint64_t> GuestMemory::take_host_dirty() const
{
    std::vector<uint64_t> out((page_count() + 63) / 64);
    for (size_t i = 0; i < out.size(); ++i) out[i] = host_dirty_[i].exchange(0, std::memory_order_relaxed);
    return out;
}

Result<void> check_host_can_back(uint64_t size, uint64_t host_ram_plus_swap)
{
    if (host_ram_plus_swap && size > host_ram_plus_swap)
        return Error("cannot allocate " + format_size(size) + " of guest memory: this host has only " +
                     format_size(host_ram_plus_swap & ~((1ull << 20) - 1)) + " of RAM and swap");
    return ok();
}

uint64_t host_ram_plus_swap()
{
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t kib = 0, total = 0;
    std::string unit;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemTotal:" || key == "SwapTotal:") total += kib * 1024;
    }
    return total;
}

}  // namespace vvmm::vmm
