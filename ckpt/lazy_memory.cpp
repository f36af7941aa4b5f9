#include "ckpt/lazy_memory.hpp"

#include <sys/mman.h>

#include "ckpt/manifest.hpp"
#include "ckpt/memory_hash.hpp"
#include "ckpt/memory_image_writer.hpp"

namespace vvmm::ckpt {

LazyMemory::LazyMemory(const vmm::GuestMemory& memory, std::vector<ChainLink> chain, OnFatal on_fatal, Userfault uffd)
    : memory_(memory), chain_(std::move(chain)), on_fatal_(std::move(on_fatal)), uffd_(std::move(uffd))
{
    // Chunks whose checksums say "all zeros" in every image that holds them
    // are not prefetched: they stay holes of the memfd (zeros) unless the
    // guest touches them before prefetching ends.
    for (const auto& r : memory_.regions())
        for (uint64_t c = r.guest_phys / kChunkSize; c < (r.guest_phys + r.size) / kChunkSize; ++c)
            if (!known_zero(c)) ram_chunks_.push_back(c);
    loaded_.assign(memory_.guest_phys_end() / kChunkSize, 0);
    buffer_.resize(kChunkSize);
}

bool LazyMemory::known_zero(uint64_t c) const
{
    for (const auto& link : chain_) {
        const auto& h = link.manifest.memory.chunks.at(c);
        const bool holds = !link.pages || link.pages->any_in(c * kPagesPerChunk, kPagesPerChunk);
        if (holds && (!h || *h != zero_chunk_hash())) return false;
        if (!link.pages) return true;  // a full image ends the search
    }
    return true;
}

Result<std::unique_ptr<LazyMemory>> LazyMemory::create(const vmm::GuestMemory& memory, std::vector<ChainLink> chain,
                                                       OnFatal on_fatal)
{
    if (chain.empty() || chain.front().manifest.memory.size != memory.guest_phys_end())
        return Error("the checkpoint's memory image does not match the VM's memory layout");
    TRY_ASSIGN(auto uffd, Userfault::create(memory.huge_pages() ? UFFD_FEATURE_MISSING_HUGETLBFS : UFFD_FEATURE_MISSING_SHMEM));
    std::unique_ptr<LazyMemory> lm(new LazyMemory(memory, std::move(chain), std::move(on_fatal), std::move(uffd)));
    for (const auto& r : memory.regions())
        if (auto reg = lm->uffd_.register_range(memory.host_base() + r.file_offset, r.size, UffdMode::missing); !reg)
            return reg.error().context("userfaultfd for lazy restore");
    return lm;
}

LazyMemory::~LazyMemory()
{
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (const auto& r : memory_.regions()) (void)uffd_.unregister(memory_.host_base() + r.file_offset, r.size);
}

Result<void> LazyMemory::verify_all()
{
    for (uint64_t c : ram_chunks_) TRY(assemble_chunk(chain_, c, buffer_, scratch_));
    return ok();
}

void LazyMemory::start()
{
    thread_ = std::thread([this] { loop(); });
}

void LazyMemory::wait_complete()
{
    while (!complete_ && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

Result<void> LazyMemory::load(uint64_t c)
{
    if (loaded_[c]) return ok();
    TRY_ASSIGN(bool zero, assemble_chunk(chain_, c, buffer_, scratch_));
    uint8_t* dst = memory_.host_page(c * kChunkSize);
    // hugetlbfs has no UFFDIO_ZEROPAGE: the zeros in the buffer are copied.
    if (zero && !memory_.huge_pages()) TRY(uffd_.zeropage(dst, kChunkSize));
    else TRY(uffd_.copy(dst, buffer_.data(), kChunkSize));
    loaded_[c] = 1;
    return ok();
}

void LazyMemory::loop()
{
    size_t next = 0;  // prefetch cursor into ram_chunks_
    uffd_msg msgs[16];
    while (!stop_) {
        // Faults first; prefetch only when no one waits.
        const bool more = next < ram_chunks_.size();
        auto n = uffd_.read_events(msgs, more ? 0 : 50);
        if (!n) {
            on_fatal_(n.error());
            return;
        }
        for (size_t i = 0; i < n.value(); ++i) {
            const auto fault = describe_event(msgs[i]);
            if (!fault) continue;
            const auto c = chunk_of_host(memory_, fault->address);
            if (!c) continue;
            if (loaded_[*c]) {
                (void)uffd_.wake(reinterpret_cast<void*>(fault->address & ~(kPageSize - 1)), kPageSize);
                continue;
            }
            if (auto r = load(*c); !r) {
                stop_ = true;
                on_fatal_(r.error().context("restoring guest memory"));
                return;
            }
            ++by_fault_;
        }
        if (n.value() == 0 && more) {
            if (auto r = load(ram_chunks_[next]); !r) {
                stop_ = true;
                on_fatal_(r.error().context("restoring guest memory"));
                return;
            }
            ++next;
        }
        if (!more && !complete_) {
            bool all = true;
            for (uint64_t c : ram_chunks_) all &= loaded_[c] != 0;
            if (all) {
                for (const auto& r : memory_.regions()) (void)uffd_.unregister(memory_.host_base() + r.file_offset, r.size);
                complete_ = true;
                return;
            }
        }
    }
}

}  // namespace vvmm::ckpt
