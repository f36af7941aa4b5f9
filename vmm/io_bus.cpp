#include "vmm/io_bus.hpp"

#include <algorithm>
#include <mutex>
#include <sstream>

namespace vvmm::vmm {

Result<void> IoBus::add(uint64_t base, uint64_t length, std::shared_ptr<BusDevice> device)
{
    if (length == 0 || base + length < base) return Error(name_ + ": empty or wrapping range");
    std::unique_lock lock(mutex_);
    for (const auto& r : ranges_) {
        if (base < r.base + r.length && r.base < base + length) {
            std::ostringstream s;
            s << name_ << ": range 0x" << std::hex << base << "+0x" << length << " overlaps 0x" << r.base;
            return Error(s.str());
        }
    }
    ranges_.push_back({base, length, std::move(device)});
    std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.base < b.base; });
    return ok();
}

void IoBus::remove(uint64_t base)
{
    std::unique_lock lock(mutex_);
    std::erase_if(ranges_, [base](const Range& r) { return r.base == base; });
}

const IoBus::Range* IoBus::find(uint64_t addr, uint64_t len) const
{
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                               [](uint64_t a, const Range& r) { return a < r.base; });
    if (it == ranges_.begin()) return nullptr;
    --it;
    if (addr - it->base >= it->length || len > it->length - (addr - it->base)) return nullptr;
    return &*it;
}

bool IoBus::read(uint64_t addr, std::span<uint8_t> data) const
{
    std::shared_lock lock(mutex_);
    if (const Range* r = find(addr, data.size())) {
        r->device->read(addr - r->base, data);
        return true;
    }
    std::fill(data.begin(), data.end(), uint8_t{0xff});
    return false;
}

bool IoBus::write(uint64_t addr, std::span<const uint8_t> data) const
{
    std::shared_lock lock(mutex_);
    if (const Range* r = find(addr, data.size())) {
        r->device->write(addr - r->base, data);
        return true;
    }
    return false;
}

}  // namespace vvmm::vmm
