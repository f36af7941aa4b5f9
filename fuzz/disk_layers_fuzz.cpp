// libFuzzer target: the disk layer chain (devices/disk_layers.*): layer map
// files, chain descriptions (as a checkpoint stores them) and chains opened
// from them. The first byte picks the mode:
//  0: a layer map file with the input's bytes (the header, run count and
//     checksum optionally made consistent, so runs get checked) is read for
//     a disk of some size. Bug: a crash, an allocation beyond the file's
//     size, or an accepted map whose runs are empty, unsorted, overlapping
//     or outside the disk, or that does not survive write + read again.
//  1: a chain description decoded from the input. Bug: a crash, or an
//     accepted one that does not encode back to the bytes it came from.
//  2: a scenario on a real chain in /dev/shm: writes at any offset and
//     length, freezes, opening earlier freezes again (a restore, also as the
//     new running disk), and opening tampered descriptions (other size,
//     mtime, read-only flag, layer order, files swapped, map files damaged).
//     Bug: a crash; a write outside the disk accepted or one inside refused;
//     a chain whose contents differ from a model of the disk; a frozen
//     description that does not open, or opens to other contents than it had
//     when frozen; a tampered description that opens to contents other than
//     its base and layers composed by their maps.
#include <fuzzer/FuzzedDataProvider.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "devices/disk_layers.hpp"
#include "fuzz/support/fuzz_platform.hpp"
#include "vmm/base/le.hpp"
#include "vmm/base/log.hpp"

using namespace vvmm;
using fuzz::check;

namespace {

const std::string& work_dir() { return fuzz::scratch_dir("layers"); }

void fresh_dir()
{
    std::filesystem::remove_all(work_dir());
    std::filesystem::create_directories(work_dir());
}

void write_file(const std::string& path, std::span<const uint8_t> bytes)
{
    UniqueFd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    check(f.valid(), "cannot create a file in the work directory");
    check(::pwrite(f.get(), bytes.data(), bytes.size(), 0) == ssize_t(bytes.size()), "cannot write a work file");
}

std::vector<uint8_t> read_file(const std::string& path)
{
    std::vector<uint8_t> out(std::filesystem::file_size(path));
    UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    check(f.valid() && ::pread(f.get(), out.data(), out.size(), 0) == ssize_t(out.size()), "cannot read a work file");
    return out;
}

// Consecutive runs merged: what write_layer_map makes of the same blocks.
std::vector<std::pair<uint64_t, uint64_t>> merged(const std::vector<std::pair<uint64_t, uint64_t>>& runs)
{
    std::vector<std::pair<uint64_t, uint64_t>> out;
    for (auto r : runs) {
        if (!out.empty() && out.back().first + out.back().second == r.first) out.back().second += r.second;
        else out.push_back(r);
    }
    return out;
}

void map_mode(FuzzedDataProvider& in)
{
    const uint64_t disk_size = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, 1 << 22) : in.ConsumeIntegral<uint64_t>();
    const bool fix_header = in.ConsumeBool(), fix_sum = in.ConsumeBool();
    std::vector<uint8_t> bytes = in.ConsumeRemainingBytes<uint8_t>();
    if (fix_header && bytes.size() >= 40) {
        std::memcpy(bytes.data(), "VVMMLMAP", 8);
        store_le<uint32_t>(bytes.data() + 8, 1);
        store_le<uint32_t>(bytes.data() + 12, uint32_t(dev::kLayerBlockSize));
        store_le<uint64_t>(bytes.data() + 16, disk_size);
        store_le<uint64_t>(bytes.data() + 24, (bytes.size() - 40) / 16);
    }
    if (fix_sum && bytes.size() >= 40) {
        XXH64_state_t* st = XXH64_createState();
        XXH64_reset(st, 0);
        XXH64_update(st, bytes.data(), 32);
        XXH64_update(st, bytes.data() + 40, bytes.size() - 40);
        store_le<uint64_t>(bytes.data() + 32, XXH64_digest(st));
        XXH64_freeState(st);
    }
    const std::string path = work_dir() + "/fuzz.map";
    write_file(path, bytes);
    auto runs = dev::read_layer_map(path, disk_size);
    if (!runs) return;
    const uint64_t blocks = (disk_size + dev::kLayerBlockSize - 1) / dev::kLayerBlockSize;
    uint64_t next_free = 0, total = 0;
    for (auto [first, count] : runs.value()) {
        check(count > 0 && first >= next_free && first < blocks && count <= blocks - first,
              "an accepted map has a run that is empty, out of order or outside the disk");
        next_free = first + count;
        total += count;
    }
    check(runs.value().size() * 16 + 40 == bytes.size(), "an accepted map holds other runs than its file");
    if (total > (1u << 16)) return;
    std::vector<uint64_t> list;
    for (auto [first, count] : runs.value())
        for (uint64_t b = first; b < first + count; ++b) list.push_back(b);
    const std::string again = work_dir() + "/again.map";
    ::unlink(again.c_str());
    check(dev::write_layer_map(again, disk_size, list).ok(), "writing back an accepted map failed");
    auto reread = dev::read_layer_map(again, disk_size);
    check(reread.ok() && reread.value() == merged(runs.value()), "a map written back reads as other blocks");
}

void description_mode(std::span<const uint8_t> bytes)
{
    StateReader reader(bytes, "disk chain");
    auto d = dev::load_chain_description(reader);
    if (!d) return;
    StateWriter writer;
    dev::save_chain_description(writer, d.value());
    const size_t used = bytes.size() - reader.remaining();
    check(writer.data().size() == used && std::equal(writer.data().begin(), writer.data().end(), bytes.begin()),
          "an accepted chain description does not encode back to its bytes");
}

// ---- scenario ----

// A description's contents composed independently of DiskChain: the base,
// then each layer's blocks (by its map) in order. nullopt if a file or map
// cannot be read.
std::optional<std::vector<uint8_t>> compose(const dev::ChainDescription& d)
{
    std::error_code ec;
    if (std::filesystem::file_size(d.base.path, ec) != d.size || ec) return std::nullopt;
    std::vector<uint8_t> out = read_file(d.base.path);
    for (const auto& l : d.layers) {
        if (std::filesystem::file_size(l.data_path, ec) != d.size || ec) return std::nullopt;
        auto runs = dev::read_layer_map(l.map_path, d.size);
        if (!runs) return std::nullopt;
        const auto data = read_file(l.data_path);
        for (auto [first, count] : runs.value()) {
            const uint64_t from = first * dev::kLayerBlockSize;
            const uint64_t to = std::min<uint64_t>((first + count) * dev::kLayerBlockSize, d.size);
            std::copy(data.begin() + ptrdiff_t(from), data.begin() + ptrdiff_t(to), out.begin() + ptrdiff_t(from));
        }
    }
    return out;
}

std::vector<uint8_t> contents(const dev::DiskChain& c)
{
    std::vector<uint8_t> out(c.size());
    check(c.read(0, out).ok(), "reading a whole disk chain failed");
    return out;
}

struct Frozen {
    dev::ChainDescription desc;
    std::vector<uint8_t> contents;
};

// Some file of the work directory, or a path that is not there.
std::string any_file(FuzzedDataProvider& in)
{
    std::vector<std::string> files;
    for (const auto& e : std::filesystem::directory_iterator(work_dir())) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    const size_t i = in.ConsumeIntegralInRange<size_t>(0, files.size());
    return i < files.size() ? files[i] : work_dir() + "/missing";
}

dev::ChainDescription tamper(FuzzedDataProvider& in, dev::ChainDescription d, int& copies)
{
    switch (in.ConsumeIntegral<uint8_t>() % 8) {
    case 0: d.size = in.ConsumeBool() ? d.size + in.ConsumeIntegralInRange<int64_t>(-4096, 4096) : in.ConsumeIntegral<uint64_t>(); break;
    case 1: d.base_mtime_ns += in.ConsumeIntegralInRange<int64_t>(-2, 2); break;
    case 2: d.base.readonly = !d.base.readonly; break;
    case 3:
        if (d.layers.size() > 1) std::swap(d.layers[0], d.layers[in.ConsumeIntegralInRange<size_t>(1, d.layers.size() - 1)]);
        else if (!d.layers.empty()) d.layers.push_back(d.layers[0]);
        break;
    case 4:
        if (!d.layers.empty()) d.layers.erase(d.layers.begin() + ptrdiff_t(in.ConsumeIntegralInRange<size_t>(0, d.layers.size() - 1)));
        break;
    case 5: {  // any file as base, data or map
        const std::string f = any_file(in);
        if (d.layers.empty() || in.ConsumeBool()) d.base.path = f;
        else if (in.ConsumeBool()) d.layers[in.ConsumeIntegralInRange<size_t>(0, d.layers.size() - 1)].data_path = f;
        else d.layers[in.ConsumeIntegralInRange<size_t>(0, d.layers.size() - 1)].map_path = f;
        break;
    }
    default: {  // a damaged copy of a map (the original stays as it is for the other descriptions)
        if (d.layers.empty()) break;
        auto& l = d.layers[in.ConsumeIntegralInRange<size_t>(0, d.layers.size() - 1)];
        std::vector<uint8_t> map = read_file(l.map_path);
        const std::string copy = work_dir() + "/tampered" + std::to_string(copies++) + ".map";
        if (in.ConsumeBool() && !map.empty()) {
            map.resize(in.ConsumeIntegralInRange<size_t>(0, map.size() + 32));
        } else if (!map.empty()) {
            const size_t at = in.ConsumeIntegralInRange<size_t>(0, map.size() - 1);
            map[at] ^= in.ConsumeIntegralInRange<uint8_t>(1, 255);
        }
        write_file(copy, map);
        l.map_path = copy;
        break;
    }
    }
    return d;
}

void scenario_mode(FuzzedDataProvider& in)
{
    const uint64_t size = in.ConsumeIntegralInRange<uint64_t>(512, 48 * 1024);
    const dev::DiskSpec spec{work_dir() + "/base.img", in.ConsumeIntegral<uint8_t>() < 24, ""};
    std::vector<uint8_t> model(size);
    for (size_t i = 0; i < size; ++i) model[i] = static_cast<uint8_t>(i * 13 + i / 4096);
    write_file(spec.path, model);
    auto opened = dev::DiskChain::open(spec);
    check(opened.ok(), "a fresh base image does not open");
    dev::DiskChain chain = std::move(opened).value();
    std::vector<Frozen> frozen;
    int copies = 0;

    for (int op = 0; op < 48 && in.remaining_bytes() > 0; ++op) {
        switch (in.ConsumeIntegral<uint8_t>() % 8) {
        case 0: case 1: case 2: {
            const uint64_t offset = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint64_t>(0, size + 1)
                                                     : in.ConsumeIntegral<uint64_t>();
            const size_t len = in.ConsumeIntegralInRange<size_t>(0, 9000);
            std::vector<uint8_t> bytes(len, in.ConsumeIntegral<uint8_t>());
            const bool inside = offset <= size && len <= size - offset;
            const bool ok = chain.write(offset, bytes).ok();
            check(ok == (inside && !chain.readonly()), "a write inside the disk refused, or one outside accepted");
            if (ok) std::copy(bytes.begin(), bytes.end(), model.begin() + ptrdiff_t(offset));
            break;
        }
        case 3: {
            const uint64_t offset = in.ConsumeIntegralInRange<uint64_t>(0, size);
            std::vector<uint8_t> out(in.ConsumeIntegralInRange<size_t>(0, size - offset));
            check(chain.read(offset, out).ok(), "a read inside the disk failed");
            check(std::equal(out.begin(), out.end(), model.begin() + ptrdiff_t(offset)), "a disk read differs from the model");
            break;
        }
        case 4: {
            auto d = chain.freeze(work_dir());
            check(d.ok(), "freeze failed");
            check(contents(chain) == model, "a disk changed contents across its freeze");
            frozen.push_back({d.value(), model});
            break;
        }
        case 5: {  // restore an earlier checkpoint; maybe run on from it
            if (frozen.empty()) break;
            const Frozen& f = frozen[in.ConsumeIntegralInRange<size_t>(0, frozen.size() - 1)];
            auto again = dev::DiskChain::open(f.desc, work_dir());
            check(again.ok(), "a frozen description does not open");
            check(contents(again.value()) == f.contents, "a frozen description opens to other contents");
            if (in.ConsumeBool()) {
                chain = std::move(again).value();
                model = f.contents;
            }
            break;
        }
        case 6: {
            if (frozen.empty()) break;
            const auto d = tamper(in, frozen[in.ConsumeIntegralInRange<size_t>(0, frozen.size() - 1)].desc, copies);
            auto c = dev::DiskChain::open(d, work_dir());
            if (!c) break;
            auto composed = compose(d);
            check(composed.has_value(), "a description opens whose files or maps cannot be read");
            check(contents(c.value()) == *composed, "a tampered description opens to contents its layers do not make");
            break;
        }
        case 7:
            check(contents(chain) == model, "a disk's contents differ from the model");
            break;
        }
    }
    check(contents(chain) == model, "a disk's contents differ from the model");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    set_log_level(std::getenv("VVMM_FUZZ_LOG") ? LogLevel::debug : LogLevel::error);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1) return 0;
    fresh_dir();
    FuzzedDataProvider in(data + 1, size - 1);
    switch (data[0] % 3) {
    case 0: map_mode(in); break;
    case 1: description_mode({data + 1, size - 1}); break;
    default: scenario_mode(in); break;
    }
    return 0;
}
