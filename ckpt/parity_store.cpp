#include "ckpt/parity_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <regex>

#include <nlohmann/json.hpp>

#include "ckpt/checkpoint_dir.hpp"
#include "vmm/base/json_field.hpp"
#include "ckpt/manifest.hpp"
#include "vmm/base/parse_number.hpp"
#include "vmm/base/positional_io.hpp"
#include "vmm/base/small_file.hpp"

namespace vvmm::ckpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

}  // namespace

ParityBlockStore::ParityBlockStore(std::string dir, const ParityCodec& codec, unsigned parity_index, SealKey key,
                                   uint64_t max_bytes)
    : dir_(std::move(dir)), codec_(codec), parity_index_(parity_index), key_(std::move(key)), max_bytes_(max_bytes)
{
}

std::string ParityBlockStore::path(uint64_t epoch, const char* ext) const
{
    char name[40];
    std::snprintf(name, sizeof name, "%06llu%s", static_cast<unsigned long long>(epoch), ext);
    return dir_ + "/" + name;
}

Result<void> ParityBlockStore::begin(uint64_t epoch, std::optional<uint64_t> base)
{
    abort();
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) return Error("cannot create " + dir_ + ": " + ec.message());
    const std::string building = path(epoch, ".tmp");
    fs::remove(building, ec);
    length_ = 0;
    if (base) {
        TRY_ASSIGN(const auto r, record(*base));
        TRY(copy_sparse_file(path(*base, ".img"), building));
        length_ = r.length;
    }
    fd_ = UniqueFd(::open(building.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd_.valid()) return errno_error("opening " + building);
    building_ = epoch;
    return ok();
}

Result<void> ParityBlockStore::apply(unsigned member, uint64_t offset, std::span<const uint8_t> delta)
{
    if (!building_) return Error("no parity epoch is being built in " + dir_);
    if (member >= codec_.data_blocks()) return Error("member " + std::to_string(member) + " is not in this parity set");
    // A parity block is as long as its set's longest image.
    if (offset > max_bytes_ || delta.size() > max_bytes_ - offset)
        return Error("a parity update past " + std::to_string(max_bytes_) + " bytes, the longest image of the set");
    buffer_.resize(delta.size());
    const std::string what = path(*building_, ".tmp");
    TRY(read_at_or_zero(fd_.get(), buffer_.data(), buffer_.size(), offset, what));
    codec_.update_block(member, parity_index_, delta.data(), buffer_.data(), delta.size());
    TRY(write_all_at(fd_.get(), buffer_.data(), buffer_.size(), offset, what));
    length_ = std::max(length_, offset + delta.size());
    return ok();
}

Result<ParityRecord> ParityBlockStore::finish()
{
    if (!building_) return Error("no parity epoch is being built in " + dir_);
    ParityRecord r{*building_, length_, {}};
    const std::string building = path(r.epoch, ".tmp");
    buffer_.resize(kChunkSize);
    for (uint64_t at = 0; at < r.length; at += kChunkSize) {
        const size_t len = static_cast<size_t>(std::min<uint64_t>(kChunkSize, r.length - at));
        TRY(read_at_or_zero(fd_.get(), buffer_.data(), len, at, building));
        r.chunk_xxh3.push_back(digest_of({buffer_.data(), len}));
    }
    if (::ftruncate(fd_.get(), static_cast<off_t>(r.length)) < 0 || ::fsync(fd_.get()) < 0)
        return errno_error("finishing " + building);
    json j = {{"format", "vvmm-parity"}, {"epoch", r.epoch}, {"length", r.length}, {"parity_index", parity_index_},
              {"chunk_xxh3", json::array()}};
    for (uint64_t h : r.chunk_xxh3) j["chunk_xxh3"].push_back(hex_digest(h));
    seal_manifest(j, key_);
    const std::string text = j.dump(1) + "\n";
    std::error_code ec;
    fs::remove(path(r.epoch, ".json"), ec);
    TRY(write_durable(dir_, fs::path(path(r.epoch, ".json")).filename().string(),
                      {reinterpret_cast<const uint8_t*>(text.data()), text.size()}));
    fs::rename(building, path(r.epoch, ".img"), ec);
    if (ec) return Error("cannot publish " + path(r.epoch, ".img") + ": " + ec.message());
    TRY(fsync_dir(dir_));
    fd_ = UniqueFd();
    building_.reset();
    return r;
}

void ParityBlockStore::keep_only(const std::vector<uint64_t>& keep)
{
    for (uint64_t e : epochs()) {
        if (std::find(keep.begin(), keep.end(), e) != keep.end()) continue;
        std::error_code ec;
        fs::remove(path(e, ".img"), ec);
        fs::remove(path(e, ".json"), ec);
    }
}

void ParityBlockStore::abort()
{
    if (!building_) return;
    std::error_code ec;
    fs::remove(path(*building_, ".tmp"), ec);
    fd_ = UniqueFd();
    building_.reset();
}

Result<ParityRecord> ParityBlockStore::record(uint64_t epoch) const
{
    const std::string p = path(epoch, ".json");
    TRY_ASSIGN(auto text, read_small_file(p, 16 << 20, "parity record", Symlinks::refuse));
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return Error(p + " is not a parity record");
    TRY(check_manifest_seal(j, SealPolicy{key_, false}, p));
    ParityRecord r;
    if (field_or<std::string>(j, "format", "") != "vvmm-parity") return Error(p + " is not a parity record");
    r.epoch = field_or<uint64_t>(j, "epoch", 0);
    r.length = field_or<uint64_t>(j, "length", 0);
    if (r.epoch != epoch) return Error(p + " describes epoch " + std::to_string(r.epoch));
    if (r.length > max_bytes_) return Error(p + ": length out of range");
    const json hashes = j.contains("chunk_xxh3") ? j["chunk_xxh3"] : json();
    if (!hashes.is_array() || hashes.size() != (r.length + kChunkSize - 1) / kChunkSize)
        return Error(p + ": chunk checksums do not match the length");
    for (const auto& h : hashes) {
        auto v = h.is_string() ? parse_hex_digest(h.get<std::string>()) : Result<uint64_t>(Error("not a string"));
        if (!v) return Error(p + ": a bad chunk checksum");
        r.chunk_xxh3.push_back(v.value());
    }
    return r;
}

Result<std::vector<uint8_t>> ParityBlockStore::read_chunk(const ParityRecord& r, uint64_t c) const
{
    if (c >= r.chunk_xxh3.size()) return Error("parity chunk " + std::to_string(c) + " is past the block's end");
    const std::string p = path(r.epoch, ".img");
    UniqueFd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd.valid()) return errno_error("opening " + p);
    const uint64_t at = c * kChunkSize;
    std::vector<uint8_t> out(static_cast<size_t>(std::min<uint64_t>(kChunkSize, r.length - at)));
    TRY(read_at_or_zero(fd.get(), out.data(), out.size(), at, p));
    if (digest_of(out) != r.chunk_xxh3[c])
        return Error(p + ": parity chunk " + std::to_string(c) + " is corrupted (checksum mismatch)");
    return out;
}

std::vector<uint64_t> ParityBlockStore::epochs() const
{
    static const std::regex name(R"((\d{6})\.json)");
    std::vector<uint64_t> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        std::smatch m;
        const std::string n = it->path().filename().string();
        if (std::regex_match(n, m, name))
            if (auto e = parse_unsigned<uint64_t>(m[1].str())) out.push_back(*e);
    }
    std::sort(out.begin(), out.end());
    return out;
}

}  // namespace vvmm::ckpt
