// libFuzzer target: the split-virtqueue chain walker and the chain
// reader/writer, fed arbitrary guest memory (rings, descriptors, indirect
// tables). Any crash, sanitizer report or out-of-RAM pointer is a bug.
#include <cstdint>
#include <cstring>

#include "devices/virtio/virtqueue.hpp"

using namespace vvmm;

namespace {
constexpr uint64_t kRam = 256 * 1024;

vmm::GuestMemory& memory()
{
    static vmm::GuestMemory mem = vmm::GuestMemory::create(kRam).value();
    return mem;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 8) return 0;
    auto& mem = memory();
    auto all = mem.span(0, kRam).value();
    std::memset(all.data(), 0, all.size());
    // Header: queue size exponent, flags, ring placement; the rest is RAM.
    // Rings sit in the first pages so the fuzzer's bytes reach them; buffers
    // and indirect tables may point anywhere (most of RAM is zeros).
    const uint16_t qsize = static_cast<uint16_t>(1u << (data[0] % 7));  // 1..64
    const bool event_idx = data[1] & 1;
    const uint64_t desc = (uint64_t(data[2]) << 2) & ~15ull;            // 0..0x3f0
    const uint64_t avail = 0x800 + ((uint64_t(data[3]) << 1) & ~1ull);
    const uint64_t used = 0xc00 + ((uint64_t(data[4]) << 2) & ~3ull);
    std::memcpy(all.data(), data + 8, std::min<size_t>(size - 8, kRam));
    auto q = dev::Virtqueue::create(mem, {qsize, desc, avail, used}, event_idx);
    if (!q) return 0;
    for (int i = 0; i < 64; ++i) {
        auto c = q->pop();
        if (!c || !c.value()) break;
        const auto& chain = *c.value();
        dev::ChainReader reader(mem, chain);
        std::vector<uint8_t> buf(static_cast<size_t>(std::min<uint64_t>(chain.readable_bytes, 1 << 20)));
        reader.read(buf);
        dev::ChainWriter writer(mem, chain);
        std::vector<uint8_t> out(static_cast<size_t>(std::min<uint64_t>(chain.writable_bytes, 1 << 20)), 0xab);
        writer.write(out);
        q->push_used(chain.head, static_cast<uint32_t>(writer.written()));
        q->should_notify();
    }
    return 0;
}
