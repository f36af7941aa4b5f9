// Lazy restore of guest memory: the memfd starts empty and registered with
// userfaultfd (missing pages); the first touch of a page, by a vCPU or a
// device, blocks until its 2 MiB chunk was read from the checkpoint chain,
// checked against its checksum and copied in. Meanwhile the same thread
// prefetches the remaining chunks in order, and unregisters when done. A
// chunk that fails its check is never mapped: the VM is stopped instead.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "ckpt/checkpoint_loader.hpp"
#include "ckpt/userfault.hpp"
#include "vmm/guest_memory.hpp"

namespace vvmm::ckpt {

class LazyMemory {
public:
    using OnFatal = std::function<void(const Error&)>;
    // Registers guest memory (call before anything touches it).
    static Result<std::unique_ptr<LazyMemory>> create(const vmm::GuestMemory& memory, std::vector<ChainLink> chain,
                                                      OnFatal on_fatal);
    ~LazyMemory();
    // Reads and checks every chunk now, without mapping anything.
    Result<void> verify_all();
    // Starts serving faults and prefetching.
    void start();
    // Blocks until every chunk is in guest memory (tests, benchmarks).
    void wait_complete();
    uint64_t served_by_fault() const { return by_fault_; }

private:
    LazyMemory(const vmm::GuestMemory& memory, std::vector<ChainLink> chain, OnFatal on_fatal, Userfault uffd);
    void loop();
    Result<void> load(uint64_t chunk);

    const vmm::GuestMemory& memory_;
    std::vector<ChainLink> chain_;
    OnFatal on_fatal_;
    Userfault uffd_;
    bool known_zero(uint64_t chunk) const;

    std::vector<uint64_t> ram_chunks_;  // in prefetch order (chunks known to be zero are left out)
    std::vector<uint8_t> loaded_;       // per chunk of the image
    std::vector<uint8_t> buffer_, scratch_;
    std::atomic<bool> stop_{false}, complete_{false};
    std::atomic<uint64_t> by_fault_{0};
    std::thread thread_;
};

}  // namespace vvmm::ckpt
