#include "devices/virtio/virtio_blk.hpp"

#include <cstring>

#include <nlohmann/json.hpp>

#include "vmm/base/le.hpp"

namespace vvmm::dev {

struct VirtioBlk::Request {
    uint16_t head;
    uint64_t generation;
    const vmm::GuestMemory* memory;
    std::vector<std::vector<iovec>> parts;  // one iovec list per I/O (read extents by layer)
    unsigned pending = 0;                   // I/Os not completed yet
    bool io_failed = false;
    bool marks_data = false;                // IN: the I/O writes the writable segments
    std::vector<ChainSegment> writable;
    uint8_t* status;
    uint64_t status_gpa;
    uint32_t used_len;  // bytes written into the chain, status included
};

namespace {
// Cuts the byte stream `iov` into consecutive pieces of the extents' lengths.
void split_iov(const std::vector<std::span<uint8_t>>& data, const std::vector<DiskExtent>& extents,
               std::vector<std::vector<iovec>>& out)
{
    size_t seg = 0;
    uint64_t seg_off = 0;
    for (const auto& e : extents) {
        std::vector<iovec> part;
        uint64_t need = e.len;
        while (need > 0) {
            const uint64_t take = std::min<uint64_t>(need, data[seg].size() - seg_off);
            part.push_back({data[seg].data() + seg_off, take});
            need -= take;
            seg_off += take;
            if (seg_off == data[seg].size()) ++seg, seg_off = 0;
        }
        out.push_back(std::move(part));
    }
}
}  // namespace

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

VirtioBlk::VirtioBlk(DiskChain disk) : disk_(std::move(disk)), name_("virtio-blk " + disk_.spec().path) {}

Result<std::shared_ptr<VirtioBlk>> VirtioBlk::create(const DiskSpec& spec)
{
    TRY_ASSIGN(auto disk, DiskChain::open(spec));
    return create(std::move(disk));
}

std::shared_ptr<VirtioBlk> VirtioBlk::create(DiskChain disk)
{
    return std::shared_ptr<VirtioBlk>(new VirtioBlk(std::move(disk)));
}

Result<void> VirtioBlk::drain(std::chrono::milliseconds timeout)
{
    std::unique_lock lock(this->lock());
    draining_ = true;
    if (!idle_.wait_for(lock, timeout, [this] { return in_flight_ == 0; }))
        return Error(name_ + ": " + std::to_string(in_flight_) + " disk requests still running after " +
                     std::to_string(timeout.count()) + " ms");
    return ok();
}

void VirtioBlk::undrain()
{
    std::lock_guard lock(this->lock());
    draining_ = false;
    // Only an activated device is kicked, so io_ is set.
    if (std::exchange(kicked_while_draining_, false)) {
        io_->post([this] {
            std::lock_guard relock(this->lock());
            if (!draining_) queue_notify(0);
        });
    }
}

Result<ChainDescription> VirtioBlk::freeze(const std::string& overlay_dir)
{
    std::lock_guard lock(this->lock());
    if (!draining_ || in_flight_ != 0) return Error(name_ + ": freeze needs a drained disk");
    return disk_.freeze(overlay_dir);
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
    io_ = &queues.io();
}

void VirtioBlk::report(nlohmann::json& out) const
{
    out["blk"] = {{"in_flight", in_flight_}, {"draining", draining_}};
}

void VirtioBlk::reset()
{
    queues_ = nullptr;
    ++generation_;
    // in_flight_ stays: those I/Os still run and drain() must wait for them.
}

void VirtioBlk::queue_notify(unsigned)
{
    Virtqueue* vq = queues_ ? queues_->queue(0) : nullptr;
    if (!vq) return;
    if (draining_) {  // a checkpoint is quiescing the disk: leave the requests queued
        kicked_while_draining_ = true;
        return;
    }
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
    r->memory = &queues_->memory();
    for (const auto& seg : chain.segments)
        if (seg.device_writable) r->writable.push_back(seg);
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
        const DiskSpec& spec = disk_.spec();
        const std::string base = spec.path.substr(spec.path.find_last_of('/') + 1);
        const std::string serial = spec.id.empty() ? base.substr(0, blk::kIdBytes) : spec.id;
        std::memcpy(id, serial.data(), std::min(serial.size(), blk::kIdBytes));
        // The writer marks the pages it writes dirty; nothing else is written.
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
    r->status_gpa = last.gpa + last.len - 1;
    r->used_len = static_cast<uint32_t>((req.type == blk::kTypeIn ? req.data_len : writer.written()) + 1);
    if (!submit) {
        complete(r, status);
        return;
    }
    const uint64_t offset = req.sector * blk::kSectorSize;
    std::vector<DiskExtent> extents;
    if (req.type == blk::kTypeIn) {
        disk_.plan_read(offset, req.data_len, extents);
        r->marks_data = true;
    } else if (req.type == blk::kTypeOut) {
        auto fd = disk_.prepare_write(offset, req.data_len);
        if (!fd) {  // copy-up failed: the host disk, not the guest, is at fault
            complete(r, blk::kStatusIoErr);
            return;
        }
        extents.push_back({fd.value(), offset, req.data_len});
    } else {
        extents.push_back({disk_.top_fd(), 0, 0});
    }
    uint64_t have = 0;
    for (const auto& d : data) have += d.size();
    if (have != (req.type == blk::kTypeFlush ? 0 : req.data_len) || (req.type == blk::kTypeIn && extents.empty())) {
        complete(r, req.data_len == 0 ? blk::kStatusOk : blk::kStatusIoErr);  // nothing to move, or buffers short
        return;
    }
    split_iov(data, extents, r->parts);
    r->pending = static_cast<unsigned>(extents.size());
    ++in_flight_;
    for (size_t i = 0; i < extents.size(); ++i) {
        const DiskExtent& e = extents[i];
        auto done = [this, r, len = e.len, flush = req.type == blk::kTypeFlush](int res) {
            std::lock_guard lock(this->lock());
            if (res < 0 || (!flush && static_cast<uint64_t>(res) != len)) r->io_failed = true;
            if (--r->pending == 0) finish_io(r);
        };
        auto& iov = r->parts[i];
        if (req.type == blk::kTypeIn) io_->readv(e.fd, iov.data(), static_cast<unsigned>(iov.size()), e.offset, done);
        else if (req.type == blk::kTypeOut) io_->writev(e.fd, iov.data(), static_cast<unsigned>(iov.size()), e.offset, done);
        else io_->fsync(e.fd, done);
    }
}

void VirtioBlk::finish_io(const std::shared_ptr<Request>& r)
{
    // The kernel wrote guest memory behind KVM's dirty log: record it, even
    // for a request a reset made stale.
    if (r->marks_data)
        for (const auto& seg : r->writable) r->memory->mark_dirty(seg.gpa, seg.len);
    --in_flight_;
    complete(r, r->io_failed ? blk::kStatusIoErr : blk::kStatusOk);
    if (in_flight_ == 0) idle_.notify_all();
}

void VirtioBlk::complete(const std::shared_ptr<Request>& r, uint8_t status)
{
    if (r->generation != generation_ || !queues_ || queues_->failed()) return;  // the device was reset meanwhile
    *r->status = status;
    r->memory->mark_dirty(r->status_gpa, 1);
    // On error nothing but the status byte was written.
    queues_->queue(0)->push_used(r->head, status == blk::kStatusOk ? r->used_len : 1);
    queues_->used(0);
}

}  // namespace vvmm::dev
