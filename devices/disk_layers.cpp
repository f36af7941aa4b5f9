#include "devices/disk_layers.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cstring>

#include "vmm/base/le.hpp"
#include "vmm/base/small_file.hpp"

namespace vvmm::dev {
namespace {

constexpr char kMapMagic[8] = {'V', 'V', 'M', 'M', 'L', 'M', 'A', 'P'};
constexpr uint32_t kMapVersion = 1;
constexpr size_t kMapHeader = 40;  // magic, version, block size, disk size, run count, xxh64
constexpr uint32_t kDescriptionVersion = 1;

Result<void> pread_all(int fd, uint8_t* p, uint64_t len, uint64_t off, const std::string& what)
{
    while (len > 0) {
        const ssize_t n = ::pread(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("reading " + what);
        if (n == 0) return Error("reading " + what + ": unexpected end of file");
        p += n, len -= static_cast<uint64_t>(n), off += static_cast<uint64_t>(n);
    }
    return ok();
}

Result<void> pwrite_all(int fd, const uint8_t* p, uint64_t len, uint64_t off, const std::string& what)
{
    while (len > 0) {
        const ssize_t n = ::pwrite(fd, p, len, static_cast<off_t>(off));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return errno_error("writing " + what);
        p += n, len -= static_cast<uint64_t>(n), off += static_cast<uint64_t>(n);
    }
    return ok();
}

// Covers the header up to the checksum field and every run.
uint64_t map_checksum(const std::vector<uint8_t>& buf)
{
    XXH64_state_t* st = XXH64_createState();
    XXH64_reset(st, 0);
    XXH64_update(st, buf.data(), 32);
    XXH64_update(st, buf.data() + kMapHeader, buf.size() - kMapHeader);
    const uint64_t sum = XXH64_digest(st);
    XXH64_freeState(st);
    return sum;
}

int64_t mtime_ns(const struct stat& st) { return int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec; }

}  // namespace

void save_chain_description(StateWriter& out, const ChainDescription& d)
{
    out.u32(kDescriptionVersion);
    out.string(d.base.path);
    out.boolean(d.base.readonly);
    out.string(d.base.id);
    out.u64(d.size);
    out.u64(static_cast<uint64_t>(d.base_mtime_ns));
    out.u32(static_cast<uint32_t>(d.layers.size()));
    for (const auto& l : d.layers) {
        out.string(l.data_path);
        out.string(l.map_path);
    }
}

Result<ChainDescription> load_chain_description(StateReader& in)
{
    ChainDescription d;
    TRY_ASSIGN(uint32_t version, in.u32());
    if (version != kDescriptionVersion)
        return in.err("disk chain description version " + std::to_string(version) + " is not supported");
    TRY_ASSIGN(d.base.path, in.string());
    TRY_ASSIGN(d.base.readonly, in.boolean());
    TRY_ASSIGN(d.base.id, in.string(20));
    TRY_ASSIGN(d.size, in.u64());
    TRY_ASSIGN(uint64_t mtime, in.u64());
    d.base_mtime_ns = static_cast<int64_t>(mtime);
    TRY_ASSIGN(uint32_t n, in.u32());
    if (n > kMaxOverlays) return in.err("disk chain of " + std::to_string(n) + " layers, at most 255");
    for (uint32_t i = 0; i < n; ++i) {
        FrozenLayer l;
        TRY_ASSIGN(l.data_path, in.string());
        TRY_ASSIGN(l.map_path, in.string());
        d.layers.push_back(std::move(l));
    }
    return d;
}

Result<void> write_layer_map(const std::string& path, uint64_t disk_size, std::vector<uint64_t> blocks)
{
    std::sort(blocks.begin(), blocks.end());
    std::vector<uint8_t> buf(kMapHeader);
    uint64_t runs = 0;
    for (size_t i = 0; i < blocks.size();) {
        size_t j = i + 1;
        while (j < blocks.size() && blocks[j] == blocks[j - 1] + 1) ++j;
        uint8_t run[16];
        store_le<uint64_t>(run, blocks[i]);
        store_le<uint64_t>(run + 8, j - i);
        buf.insert(buf.end(), run, run + 16);
        ++runs;
        i = j;
    }
    std::memcpy(buf.data(), kMapMagic, 8);
    store_le<uint32_t>(buf.data() + 8, kMapVersion);
    store_le<uint32_t>(buf.data() + 12, kLayerBlockSize);
    store_le<uint64_t>(buf.data() + 16, disk_size);
    store_le<uint64_t>(buf.data() + 24, runs);
    store_le<uint64_t>(buf.data() + 32, map_checksum(buf));

    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd.valid()) return errno_error("cannot create disk layer map '" + path + "'");
    auto written = pwrite_all(fd.get(), buf.data(), buf.size(), 0, "disk layer map '" + path + "'");
    if (written && ::fsync(fd.get()) < 0) written = errno_error("fsync of disk layer map '" + path + "'");
    if (!written) {
        ::unlink(path.c_str());
        return written.error();
    }
    return ok();
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> read_layer_map(const std::string& path, uint64_t disk_size)
{
    const std::string what = "disk layer map '" + path + "'";
    // Maps live in checkpoint directories: a symbolic link there is refused.
    TRY_ASSIGN(auto fd, open_no_symlink(path, O_RDONLY, "disk layer map"));
    struct stat st {};
    if (::fstat(fd.get(), &st) < 0) return errno_error("cannot stat " + what);
    if (!S_ISREG(st.st_mode)) return Error(what + " is not a regular file");
    const uint64_t blocks = (disk_size + kLayerBlockSize - 1) / kLayerBlockSize;
    if (static_cast<uint64_t>(st.st_size) < kMapHeader) return Error(what + ": too short for a header");
    // At most one run per two blocks can be disjoint; bound before allocating.
    if (static_cast<uint64_t>(st.st_size) > kMapHeader + 16 * (blocks / 2 + 1))
        return Error(what + ": larger than any map of a " + std::to_string(disk_size) + "-byte disk");
    std::vector<uint8_t> buf(static_cast<size_t>(st.st_size));
    TRY(pread_all(fd.get(), buf.data(), buf.size(), 0, what));
    if (std::memcmp(buf.data(), kMapMagic, 8) != 0) return Error(what + ": not a vvmm layer map (bad magic)");
    const uint32_t version = load_le<uint32_t>(buf.data() + 8);
    if (version != kMapVersion) return Error(what + ": version " + std::to_string(version) + " is not supported");
    const uint32_t bs = load_le<uint32_t>(buf.data() + 12);
    if (bs != kLayerBlockSize) return Error(what + ": block size " + std::to_string(bs) + ", expected 4096");
    const uint64_t size = load_le<uint64_t>(buf.data() + 16);
    if (size != disk_size)
        return Error(what + ": made for a disk of " + std::to_string(size) + " bytes, this one has " +
                     std::to_string(disk_size));
    const uint64_t runs = load_le<uint64_t>(buf.data() + 24);
    if (runs != (buf.size() - kMapHeader) / 16 || (buf.size() - kMapHeader) % 16 != 0)
        return Error(what + ": truncated or has trailing bytes");
    if (map_checksum(buf) != load_le<uint64_t>(buf.data() + 32)) return Error(what + ": checksum mismatch (corrupted)");
    std::vector<std::pair<uint64_t, uint64_t>> out;
    out.reserve(runs);
    uint64_t next_free = 0;
    for (uint64_t i = 0; i < runs; ++i) {
        const uint64_t first = load_le<uint64_t>(buf.data() + kMapHeader + 16 * i);
        const uint64_t count = load_le<uint64_t>(buf.data() + kMapHeader + 16 * i + 8);
        if (count == 0 || first < next_free || first >= blocks || count > blocks - first)
            return Error(what + ": run " + std::to_string(i) + " is empty, out of order or outside the disk");
        out.emplace_back(first, count);
        next_free = first + count;
    }
    return out;
}

Result<DiskChain> DiskChain::open(const DiskSpec& spec)
{
    TRY_ASSIGN(auto image, DiskImage::open(spec));
    const uint64_t size = image.size();
    DiskChain c(spec, std::move(image).release(), size);
    c.desc_.base = spec;
    c.desc_.size = size;
    return c;
}

Result<DiskChain> DiskChain::open(const ChainDescription& d, const std::string& overlay_dir)
{
    if (d.layers.size() + (d.base.readonly ? 0 : 1) > kMaxOverlays)
        return Error("disk '" + d.base.path + "': chain of " + std::to_string(d.layers.size()) + " layers is too long");
    if (d.base.readonly && !d.layers.empty()) return Error("disk '" + d.base.path + "': a read-only disk has no layers");
    // After a freeze the base is never written: open it read-only.
    DiskSpec ro = d.base;
    ro.readonly = true;
    TRY_ASSIGN(auto image, DiskImage::open(ro));
    struct stat st {};
    if (::fstat(image.fd(), &st) < 0) return errno_error("cannot stat disk image '" + d.base.path + "'");
    if (image.size() != d.size || (S_ISREG(st.st_mode) && mtime_ns(st) != d.base_mtime_ns))
        return Error("disk image '" + d.base.path + "' changed since the checkpoint (size or modification time differ)");
    DiskChain c(d.base, std::move(image).release(), d.size);
    c.owner_.assign(c.block_count(), 0);
    for (const auto& l : d.layers) {
        Overlay o;
        o.path = l.data_path;
        TRY_ASSIGN(o.fd, open_no_symlink(l.data_path, O_RDONLY, "disk layer"));
        if (::fstat(o.fd.get(), &st) < 0) return errno_error("cannot stat disk layer '" + l.data_path + "'");
        if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != d.size)
            return Error("disk layer '" + l.data_path + "' is not a " + std::to_string(d.size) + "-byte file");
        c.overlays_.push_back(std::move(o));
        TRY(c.apply_map(l.map_path, static_cast<uint8_t>(c.overlays_.size())));
    }
    if (!d.base.readonly) {
        TRY_ASSIGN(auto top, c.create_overlay(overlay_dir));
        c.overlays_.push_back(std::move(top));
    }
    if (c.overlays_.empty()) c.owner_.clear();
    c.desc_ = d;
    return c;
}

Result<void> DiskChain::apply_map(const std::string& path, uint8_t owner)
{
    TRY_ASSIGN(auto runs, read_layer_map(path, size_));
    for (auto [first, count] : runs) std::fill_n(owner_.begin() + static_cast<ptrdiff_t>(first), count, owner);
    return ok();
}

Result<DiskChain::Overlay> DiskChain::create_overlay(const std::string& dir) const
{
    const std::string name = spec_.path.substr(spec_.path.find_last_of('/') + 1);
    std::string tmpl = (dir.empty() ? std::string(".") : dir) + "/" + name + "-XXXXXX.layer";
    Overlay o;
    o.fd = UniqueFd(::mkostemps(tmpl.data(), 6, O_CLOEXEC));
    if (!o.fd.valid()) return errno_error("cannot create a disk overlay in '" + dir + "'");
    o.path = tmpl;
    if (::ftruncate(o.fd.get(), static_cast<off_t>(size_)) < 0) {
        auto e = errno_error("cannot size disk overlay '" + o.path + "'");
        ::unlink(o.path.c_str());
        return e;
    }
    return o;
}

const std::string& DiskChain::top_path() const { return overlays_.empty() ? spec_.path : overlays_.back().path; }

int DiskChain::top_fd() const { return overlays_.empty() ? base_.get() : overlays_.back().fd.get(); }

void DiskChain::plan_read(uint64_t offset, uint64_t len, std::vector<DiskExtent>& out) const
{
    out.clear();
    if (len == 0) return;
    if (owner_.empty()) {
        out.push_back({base_.get(), offset, len});
        return;
    }
    const uint64_t end = offset + len;
    uint64_t at = offset;
    while (at < end) {
        uint64_t block = at / kLayerBlockSize;
        const uint8_t who = owner_[block];
        while ((block + 1) * kLayerBlockSize < end && owner_[block + 1] == who) ++block;
        const uint64_t stop = std::min(end, (block + 1) * kLayerBlockSize);
        out.push_back({fd_of(who), at, stop - at});
        at = stop;
    }
}

Result<void> DiskChain::copy_up(uint64_t block)
{
    uint8_t buf[kLayerBlockSize];
    const uint64_t start = block * kLayerBlockSize;
    const uint64_t len = std::min(kLayerBlockSize, size_ - start);
    TRY(pread_all(fd_of(owner_[block]), buf, len, start, "disk layer below '" + top_path() + "'"));
    return pwrite_all(top_fd(), buf, len, start, "disk overlay '" + top_path() + "'");
}

Result<int> DiskChain::prepare_write(uint64_t offset, uint64_t len)
{
    if (spec_.readonly) return Error("disk '" + spec_.path + "' is read-only");
    if (overlays_.empty() || len == 0) return top_fd();
    const uint8_t top = static_cast<uint8_t>(overlays_.size());
    const uint64_t first = offset / kLayerBlockSize, last = (offset + len - 1) / kLayerBlockSize;
    for (uint64_t b : {first, last}) {
        const uint64_t start = b * kLayerBlockSize, end = std::min(start + kLayerBlockSize, size_);
        const bool covered = offset <= start && offset + len >= end;
        if (owner_[b] != top && !covered) {
            TRY(copy_up(b));
            owner_[b] = top;
            top_new_.push_back(b);
        }
    }
    for (uint64_t b = first; b <= last; ++b) {
        if (owner_[b] == top) continue;
        owner_[b] = top;
        top_new_.push_back(b);
    }
    return top_fd();
}

Result<void> DiskChain::read(uint64_t offset, std::span<uint8_t> out) const
{
    if (offset > size_ || out.size() > size_ - offset) return Error("read outside the disk");
    std::vector<DiskExtent> plan;
    plan_read(offset, out.size(), plan);
    for (const auto& e : plan) TRY(pread_all(e.fd, out.data() + (e.offset - offset), e.len, e.offset, "disk layer"));
    return ok();
}

Result<void> DiskChain::write(uint64_t offset, std::span<const uint8_t> in)
{
    if (offset > size_ || in.size() > size_ - offset) return Error("write outside the disk");
    TRY_ASSIGN(int fd, prepare_write(offset, in.size()));
    return pwrite_all(fd, in.data(), in.size(), offset, "disk '" + top_path() + "'");
}

Result<ChainDescription> DiskChain::freeze(const std::string& overlay_dir)
{
    if (spec_.readonly) {
        if (desc_.base_mtime_ns == 0) {
            struct stat st {};
            if (::fstat(base_.get(), &st) < 0) return errno_error("cannot stat disk image '" + spec_.path + "'");
            desc_.base_mtime_ns = mtime_ns(st);
        }
        return desc_;
    }
    if (overlays_.size() >= kMaxOverlays)
        return Error("disk '" + spec_.path + "': cannot freeze, its chain already has " +
                     std::to_string(kMaxOverlays) + " layers");
    // New top first: if anything below fails, the chain is unchanged.
    TRY_ASSIGN(auto next, create_overlay(overlay_dir));
    auto undo = [&](Error e) {
        ::unlink(next.path.c_str());
        return e;
    };
    ChainDescription d = desc_;
    UniqueFd base_ro;
    if (::fdatasync(top_fd()) < 0) return undo(errno_error("fsync of disk '" + top_path() + "'"));
    if (overlays_.empty()) {
        // The base stops taking writes: keep only a read-only fd to it,
        // of the same file.
        base_ro = UniqueFd(::open(spec_.path.c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st {}, old {};
        if (!base_ro.valid()) return undo(errno_error("cannot reopen disk image '" + spec_.path + "'"));
        if (::fstat(base_ro.get(), &st) < 0 || ::fstat(base_.get(), &old) < 0)
            return undo(errno_error("cannot stat disk image '" + spec_.path + "'"));
        if (st.st_dev != old.st_dev || st.st_ino != old.st_ino)
            return undo(Error("disk image '" + spec_.path + "' was replaced while the VM ran"));
        d.base_mtime_ns = mtime_ns(st);
    } else {
        const FrozenLayer l{top_path(), top_path() + ".map"};
        if (auto w = write_layer_map(l.map_path, size_, top_new_); !w) return undo(w.error());
        d.layers.push_back(l);
    }
    // Commit: nothing below can fail.
    if (base_ro.valid()) {
        base_ = std::move(base_ro);
        owner_.assign(block_count(), 0);
    }
    overlays_.push_back(std::move(next));
    top_new_.clear();
    desc_ = std::move(d);
    return desc_;
}

}  // namespace vvmm::dev
