#include "devices/virtio/virtio_blk.hpp"

#include <cstring>

#include "vmm/base/le.hpp"

namespace vvmm::dev {

struct VirtioBlk::Request {
    uint16_t head;
    uint64_t generation;
    std::vector<iovec> iov;
    uint8_t* status;
    uint32_t used_len;  // bytes written into the chain, status included
    uint64_t expected;  // bytes the I/O must move
};

Result<BlockRequest> parse_block_request(const vmm::GuestMemory& mem, const DescriptorChain& chain)
{
    ChainReader reader(mem, chain);
    uint8_t header[16];
    if (!reader.read(header)) return Error("block request shorter than its 16-byte header");
    if (chain.writable_bytes < 1) return Error("block request has no status byte");
    BlockRequest r;
    r.type = load_le<uint32_t>(header);
    r.sector = load_le<uint64_t>(header + 8);
    switch (r.type) {
    case blk::kTypeIn: r.data_len = chain.writable_bytes - 1; break;
    case blk::kTypeOut: r.data_len = reader.remaining_readable(); break;
    default: r.data_len = 0; break;
    }
    return r;
}

VirtioBlk::VirtioBlk(DiskImage disk, DiskSpec spec, vmm::IoThread& io)
    : disk_(std::move(disk)), spec_(std::move(spec)), name_("virtio-blk " + spec_.path), io_(io)
{
}

Result<std::shared_ptr<VirtioBlk>> VirtioBlk::create(const DiskSpec& spec, vmm::IoThread& io)
{
    TRY_ASSIGN(auto disk, DiskImage::open(spec));
    return std::shared_ptr<VirtioBlk>(new VirtioBlk(std::move(disk), spec, io));
}

uint64_t VirtioBlk::device_features() const
{
    return blk::kFSegMax | blk::kFBlkSize | blk::kFFlush | (disk_.readonly() ? blk::kFRo : 0);
}

void VirtioBlk::read_config(uint64_t offset, std::span<uint8_t> data) const
{
    uint8_t cfg[24] = {};
    store_le<uint64_t>(cfg + 0, disk_.size() / blk::kSectorSize);  // capacity
    store_le<uint32_t>(cfg + 12, max_queue_size() - 2);             // seg_max: leave room for header and status
    store_le<uint32_t>(cfg + 20, blk::kSectorSize);                 // blk_size
    std::memcpy(data.data(), cfg + offset, data.size());
}

void VirtioBlk::activate(VirtioQueues& queues)
{
    queues_ = &queues;
    device_lock_ = &queues.lock();
}

void VirtioBlk::reset()
{
    queues_ = nullptr;
    ++generation_;
    in_flight_ = 0;
}

void VirtioBlk::queue_notify(unsigned)
{
    Virtqueue* vq = queues_ ? queues_->queue(0) : nullptr;
    if (!vq) return;
    auto drained = drain_queue(*vq, [this](const DescriptorChain& chain) {
        start(chain);
        return !queues_->failed();
    });
    if (!drained) queues_->fail(drained.error().message());
}

void VirtioBlk::start(const DescriptorChain& chain)
{
    auto parsed = parse_block_request(queues_->memory(), chain);
    if (!parsed) {
        queues_->fail(parsed.error().message());
        return;
    }
    const BlockRequest& req = parsed.value();
    auto r = std::make_shared<Request>();
    r->head = chain.head;
    r->generation = generation_;
    ChainWriter writer(queues_->memory(), chain);
    std::vector<std::span<uint8_t>> data;
    const uint64_t capacity = disk_.size() / blk::kSectorSize;
    auto in_range = [&] {
        return req.data_len % blk::kSectorSize == 0 && req.sector <= capacity &&
               req.data_len / blk::kSectorSize <= capacity - req.sector;
    };
    uint8_t status = blk::kStatusOk;
    bool submit = false;
    switch (req.type) {
    case blk::kTypeIn:
        writer.take_writable(req.data_len, data);
        if (!in_range()) status = blk::kStatusIoErr;
        else submit = true;
        break;
    case blk::kTypeOut: {
        ChainReader reader(queues_->memory(), chain);
        uint8_t skip[16];
        reader.read(skip);
        reader.take_readable(req.data_len, data);
        if (disk_.readonly() || !in_range()) status = blk::kStatusIoErr;
        else submit = true;
        break;
    }
    case blk::kTypeFlush:
        submit = !disk_.readonly();
        break;
    case blk::kTypeGetId: {
        uint8_t id[blk::kIdBytes] = {};
        // Default serial: the image's file name, as far as it fits.
        const std::string base = spec_.path.substr(spec_.path.find_last_of('/') + 1);
        const std::string serial = spec_.id.empty() ? base.substr(0, blk::kIdBytes) : spec_.id;
        std::memcpy(id, serial.data(), std::min(serial.size(), blk::kIdBytes));
        writer.write({id, std::min<uint64_t>(blk::kIdBytes, chain.writable_bytes - 1)});
        break;
    }
    default:
        status = blk::kStatusUnsupported;
        break;
    }
    // The status byte is the chain's last byte: writable segments come last
    // and parse_block_request() checked there is at least one writable byte.
    const ChainSegment& last = chain.segments.back();
    r->status = queues_->memory().span(last.gpa + last.len - 1, 1).value().data();
    r->used_len = static_cast<uint32_t>((req.type == blk::kTypeIn ? req.data_len : writer.written()) + 1);
    r->expected = req.data_len;
    if (!submit) {
        complete(r, status);
        return;
    }
    for (auto& s : data) r->iov.push_back({s.data(), s.size()});
    ++in_flight_;
    auto done = [this, r](int res) {
        std::lock_guard lock(*device_lock_);
        --in_flight_;
        complete(r, res >= 0 && static_cast<uint64_t>(res) == r->expected ? blk::kStatusOk : blk::kStatusIoErr);
    };
    const uint64_t offset = req.sector * blk::kSectorSize;
    if (req.type == blk::kTypeIn) io_.readv(disk_.fd(), r->iov.data(), static_cast<unsigned>(r->iov.size()), offset, done);
    else if (req.type == blk::kTypeOut) io_.writev(disk_.fd(), r->iov.data(), static_cast<unsigned>(r->iov.size()), offset, done);
    else io_.fsync(disk_.fd(), done);
}

void VirtioBlk::complete(const std::shared_ptr<Request>& r, uint8_t status)
{
    if (r->generation != generation_ || !queues_ || queues_->failed()) return;  // the device was reset meanwhile
    *r->status = status;
    // On error nothing but the status byte was written.
    queues_->queue(0)->push_used(r->head, status == blk::kStatusOk ? r->used_len : 1);
    queues_->used(0);
}

}  // namespace vvmm::dev
