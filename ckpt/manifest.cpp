#include "ckpt/manifest.hpp"

#include "vmm/base/json_field.hpp"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <type_traits>

#include "vmm/base/small_file.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"

namespace vvmm::ckpt {
namespace {

using nlohmann::json;

constexpr size_t kMaxDevices = 31;
constexpr size_t kMaxStats = 64;

json digest_json(const FileDigest& d) { return {{"file", d.file}, {"size", d.size}, {"xxh3", hex_digest(d.xxh3)}}; }

// A file name inside the checkpoint directory: no paths, no "..".
Result<std::string> local_file(const json& j, const char* name)
{
    TRY_ASSIGN(auto f, field<std::string>(j, name));
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
        return Error(std::string("field '") + name + "' is not a file name: '" + f + "'");
    return f;
}

Result<FileDigest> digest_from(const json& j)
{
    FileDigest d;
    TRY_ASSIGN(d.file, local_file(j, "file"));
    TRY_ASSIGN(d.size, field<uint64_t>(j, "size"));
    TRY_ASSIGN(auto x, field<std::string>(j, "xxh3"));
    TRY_ASSIGN(d.xxh3, parse_hex_digest(x));
    return d;
}

// Each item of `name`, an array, read by `one`.
template <typename T, typename Read>
Result<std::vector<T>> items_from(const json& j, const char* name, Read one)
{
    if (!j.is_object() || !j.contains(name) || !j.at(name).is_array())
        return Error(std::string("missing field '") + name + "'");
    if (j.at(name).size() > kMaxDevices) return Error(std::string("field '") + name + "' has more items than PCI slots");
    std::vector<T> out;
    for (const auto& item : j.at(name)) {
        auto v = one(item);
        if (!v) return v.error().context(std::string("field '") + name + "'");
        out.push_back(std::move(v).value());
    }
    return out;
}

Result<vmm::DiskDescription> disk_description_from(const json& j)
{
    vmm::DiskDescription d;
    TRY_ASSIGN(d.path, field<std::string>(j, "path"));
    TRY_ASSIGN(d.readonly, field<bool>(j, "readonly"));
    TRY_ASSIGN(d.id, field<std::string>(j, "id"));
    if (d.path.empty()) return Error("a disk without a path");
    if (d.id.size() > vmm::kMaxDiskIdLength) return Error("a disk id longer than 20 bytes");
    return d;
}

Result<vmm::NicDescription> nic_description_from(const json& j)
{
    vmm::NicDescription n;
    TRY_ASSIGN(n.id, field<std::string>(j, "id"));
    TRY_ASSIGN(n.listen, field<std::string>(j, "listen"));
    TRY_ASSIGN(n.peers, field<std::vector<std::string>>(j, "peers"));
    TRY_ASSIGN(n.mac, field<std::string>(j, "mac"));
    return n;
}

// Format version 1 kept the `--disk` and `--net` flags' text.
Result<vmm::DiskDescription> disk_flag_from(const json& j)
{
    if (!j.is_string()) return Error("a disk that is not a string");
    return vmm::parse_disk_flag(j.get<std::string>());
}

Result<vmm::NicDescription> nic_flag_from(const json& j)
{
    if (!j.is_string()) return Error("a network card that is not a string");
    return vmm::parse_nic_flag(j.get<std::string>());
}

Result<vmm::VmDescription> vm_from(const json& j, uint32_t format_version)
{
    vmm::VmDescription vm;
    TRY_ASSIGN(vm.cpus, field<unsigned>(j, "cpus"));
    TRY_ASSIGN(vm.mem_bytes, field<uint64_t>(j, "mem_bytes"));
    TRY_ASSIGN(vm.huge_pages, field<bool>(j, "huge_pages"));
    TRY_ASSIGN(vm.kernel, field<std::string>(j, "kernel"));
    TRY_ASSIGN(vm.cmdline, field<std::string>(j, "cmdline"));
    TRY_ASSIGN(vm.console, field<std::string>(j, "console"));
    if (format_version == 1) {
        TRY_ASSIGN(vm.disks, items_from<vmm::DiskDescription>(j, "disks", disk_flag_from));
        TRY_ASSIGN(vm.nics, items_from<vmm::NicDescription>(j, "nets", nic_flag_from));
    } else {
        TRY_ASSIGN(vm.disks, items_from<vmm::DiskDescription>(j, "disks", disk_description_from));
        TRY_ASSIGN(vm.nics, items_from<vmm::NicDescription>(j, "nics", nic_description_from));
    }
    // What `vvmm run` accepts, checked before anything is sized by it: a
    // restore allocates per-chunk tables and page maps by mem_bytes.
    if (vm.cpus == 0 || vm.cpus > vmm::kMaxCpus) return Error("vm.cpus out of range");
    if (vm.mem_bytes % kChunkSize) return Error("vm.mem_bytes is not a multiple of 2 MiB");
    if (vm.mem_bytes < vmm::layout::kMinMemory || vm.mem_bytes > vmm::layout::kMaxMemory)
        return Error("vm.mem_bytes " + std::to_string(vm.mem_bytes) + " is out of range (32 MiB..1 TiB)");
    // Every disk and network card takes a PCI slot (31 beside the host bridge).
    if (vm.disks.size() + vm.nics.size() > kMaxDevices) return Error("more disks and network cards than PCI slots");
    return vm;
}

json vm_json(const vmm::VmDescription& vm)
{
    json disks = json::array(), nics = json::array();
    for (const auto& d : vm.disks) disks.push_back({{"path", d.path}, {"readonly", d.readonly}, {"id", d.id}});
    for (const auto& n : vm.nics) nics.push_back({{"id", n.id}, {"listen", n.listen}, {"peers", n.peers}, {"mac", n.mac}});
    return {{"cpus", vm.cpus},         {"mem_bytes", vm.mem_bytes}, {"huge_pages", vm.huge_pages},
            {"kernel", vm.kernel},     {"cmdline", vm.cmdline},     {"console", vm.console},
            {"disks", disks},          {"nics", nics}};
}

Result<MemoryImage> memory_from(const json& j, uint64_t mem_bytes)
{
    MemoryImage m;
    TRY_ASSIGN(m.file, local_file(j, "file"));
    TRY_ASSIGN(m.size, field<uint64_t>(j, "size"));
    TRY_ASSIGN(m.full, field<bool>(j, "full"));
    TRY_ASSIGN(auto chunk, field<uint64_t>(j, "chunk_size"));
    if (chunk != kChunkSize) return Error("memory chunk size " + std::to_string(chunk) + " is not supported");
    if (m.size % kChunkSize || m.size < mem_bytes || m.size > mem_bytes + (1ull << 30))
        return Error("memory image size " + std::to_string(m.size) + " does not fit a VM of " + std::to_string(mem_bytes) + " bytes");
    if (!m.full) {
        if (!j.contains("page_map")) return Error("incremental memory image without a page map");
        TRY_ASSIGN(m.page_map, digest_from(j.at("page_map")));
        if (m.page_map->size != m.size / kPageSize / 8) return Error("page map has the wrong size");
    }
    if (!j.contains("chunks") || !j.at("chunks").is_array()) return Error("missing field 'chunks'");
    const auto& chunks = j.at("chunks");
    if (chunks.size() != m.size / kChunkSize) return Error("memory image has " + std::to_string(chunks.size()) + " chunk checksums, expected " + std::to_string(m.size / kChunkSize));
    for (const auto& c : chunks) {
        if (c.is_null()) {
            m.chunks.emplace_back();
            continue;
        }
        if (!c.is_string()) return Error("chunk checksum has the wrong type");
        TRY_ASSIGN(uint64_t v, parse_hex_digest(c.get<std::string>()));
        m.chunks.emplace_back(v);
    }
    return m;
}

Result<DiskLayers> disk_from(const json& j)
{
    DiskLayers d;
    TRY_ASSIGN(d.base, field<std::string>(j, "base"));
    TRY_ASSIGN(d.base_size, field<uint64_t>(j, "base_size"));
    TRY_ASSIGN(d.base_mtime_ns, field<int64_t>(j, "base_mtime_ns"));
    if (!j.contains("layers") || !j.at("layers").is_array()) return Error("missing field 'layers'");
    for (size_t i = 0; i < j.at("layers").size(); ++i) {
        json wrap = {{"f", j.at("layers")[i]}};
        TRY_ASSIGN(auto f, local_file(wrap, "f"));
        d.layers.push_back(f);
    }
    return d;
}

}  // namespace

json to_json(const Manifest& m)
{
    json chunks = json::array();
    for (const auto& c : m.memory.chunks) chunks.push_back(c ? json(hex_digest(*c)) : json(nullptr));
    json memory = {{"file", m.memory.file}, {"size", m.memory.size}, {"full", m.memory.full},
                   {"chunk_size", kChunkSize}, {"chunks", chunks}};
    if (m.memory.page_map) memory["page_map"] = digest_json(*m.memory.page_map);
    json disks = json::array();
    for (const auto& d : m.disks)
        disks.push_back({{"base", d.base}, {"base_size", d.base_size}, {"base_mtime_ns", d.base_mtime_ns}, {"layers", d.layers}});
    json j = {
        {"format", "vvmm-checkpoint"},
        {"format_version", kFormatVersion},  // the form written here, whatever version `m` was read from
        {"id", m.id},
        {"parent", m.parent ? json(*m.parent) : json(nullptr)},
        {"depth", m.depth},
        {"mode", m.mode},
        {"created", m.created},
        {"vm", vm_json(m.vm)},
        {"state", digest_json(m.state)},
        {"memory", memory},
        {"disks", disks},
        {"stats", m.stats},
    };
    if (m.cluster) j["cluster"] = {{"epoch", m.cluster->epoch}, {"channels", digest_json(m.cluster->channels)}};
    return j;
}

Result<Manifest> manifest_from_json(const json& j)
{
    Manifest m;
    TRY_ASSIGN(auto format, field<std::string>(j, "format"));
    if (format != "vvmm-checkpoint") return Error("not a vvmm checkpoint manifest");
    TRY_ASSIGN(m.format_version, field<uint32_t>(j, "format_version"));
    if (m.format_version > kFormatVersion)
        return Error("checkpoint format version " + std::to_string(m.format_version) + " is newer than this vvmm's (" +
                     std::to_string(kFormatVersion) + ")");
    if (m.format_version == 0) return Error("checkpoint format version 0");
    TRY_ASSIGN(m.id, field<std::string>(j, "id"));
    if (!j.contains("parent")) return Error("missing field 'parent'");
    if (!j.at("parent").is_null()) {
        TRY_ASSIGN(auto parent, local_file(j, "parent"));
        m.parent = parent;
    }
    TRY_ASSIGN(m.depth, field<unsigned>(j, "depth"));
    TRY_ASSIGN(m.mode, field<std::string>(j, "mode"));
    TRY_ASSIGN(m.created, field<std::string>(j, "created"));
    if (!j.contains("vm")) return Error("missing field 'vm'");
    TRY_ASSIGN(m.vm, vm_from(j.at("vm"), m.format_version));
    if (!j.contains("state")) return Error("missing field 'state'");
    TRY_ASSIGN(m.state, digest_from(j.at("state")));
    if (!j.contains("memory")) return Error("missing field 'memory'");
    TRY_ASSIGN(m.memory, memory_from(j.at("memory"), m.vm.mem_bytes));
    if (m.memory.full != !m.parent.has_value()) return Error("memory image kind does not match the parent field");
    if (!j.contains("disks") || !j.at("disks").is_array()) return Error("missing field 'disks'");
    for (const auto& d : j.at("disks")) {
        TRY_ASSIGN(auto disk, disk_from(d));
        m.disks.push_back(std::move(disk));
    }
    if (m.disks.size() != m.vm.disks.size()) return Error("disk layers do not match the VM's disks");
    if (j.contains("cluster")) {
        const json& c = j.at("cluster");
        if (!c.is_object() || !c.contains("channels")) return Error("field 'cluster' is not an epoch record");
        EpochPart part;
        TRY_ASSIGN(part.epoch, field<uint64_t>(c, "epoch"));
        if (part.epoch == 0) return Error("field 'cluster.epoch' is 0");
        TRY_ASSIGN(part.channels, digest_from(c.at("channels")));
        m.cluster = std::move(part);
    }
    if (j.contains("stats")) {
        // Kept with the manifest of every link of a chain: only the small
        // flat object vvmm writes, not a crafted tree of millions of values.
        const json& stats = j.at("stats");
        const auto small = [](const json& v) {
            return !v.is_structured() && !(v.is_string() && v.get_ref<const std::string&>().size() > 256);
        };
        if (!stats.is_object() || stats.size() > kMaxStats || !std::all_of(stats.begin(), stats.end(), small))
            return Error("field 'stats' is not a small object of numbers");
        m.stats = stats;
    }
    return m;
}

Result<Manifest> read_manifest(const std::string& dir, const SealPolicy& policy)
{
    const std::string path = dir + "/manifest.json";
    // A 1 TiB VM's manifest (an xxh3 per 2 MiB chunk) is about 10 MiB.
    TRY_ASSIGN(auto text, read_small_file(path, 64u << 20, "checkpoint manifest", Symlinks::refuse));
    json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return Error(path + ": not valid JSON (damaged or truncated manifest)");
    if (!j.is_object()) return Error(path + ": not a vvmm checkpoint manifest");
    TRY(check_manifest_seal(j, policy, path));
    auto m = manifest_from_json(j);
    if (!m) return m.error().context(path);
    return m;
}

}  // namespace vvmm::ckpt
