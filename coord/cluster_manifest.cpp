#include "coord/cluster_manifest.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "ckpt/checkpoint_dir.hpp"
#include "vmm/base/json_field.hpp"
#include "vmm/base/parse_number.hpp"
#include "vmm/base/small_file.hpp"

namespace vvmm::coord {
namespace {

using nlohmann::json;
using vvmm::field;

constexpr const char* kFormat = "vvmm-cluster-epoch";
constexpr unsigned kFormatVersion = 1;
constexpr uint64_t kMaxManifestBytes = 16 << 20;

std::string epoch_name(uint64_t epoch)
{
    char b[32];
    std::snprintf(b, sizeof b, "%06llu", static_cast<unsigned long long>(epoch));
    return b;
}

bool safe_name(const std::string& s)
{
    return !s.empty() && s.size() <= 64 && s != "." && s != ".." &&
           s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == std::string::npos;
}

Result<double> number(const json& j, const char* name)
{
    if (!j.contains(name) || !j.at(name).is_number()) return Error(std::string("field '") + name + "' is not a number");
    return j.at(name).get<double>();
}

Result<EpochVm> vm_from(const json& j)
{
    EpochVm v;
    TRY_ASSIGN(v.name, field<std::string>(j, "name"));
    TRY_ASSIGN(v.node, field<std::string>(j, "node"));
    TRY_ASSIGN(v.id, field<std::string>(j, "id"));
    if (!safe_name(v.name) || !safe_name(v.id)) return Error("a VM name or checkpoint id is not a plain name");
    TRY_ASSIGN(auto digest, field<std::string>(j, "manifest_xxh3"));
    TRY_ASSIGN(v.manifest_xxh3, vvmm::parse_hex_digest(digest));
    TRY_ASSIGN(v.bytes, field<uint64_t>(j, "bytes"));
    TRY_ASSIGN(v.pause_ms, number(j, "pause_ms"));
    TRY_ASSIGN(v.total_ms, number(j, "total_ms"));
    TRY_ASSIGN(v.incremental, field<bool>(j, "incremental"));
    if (j.contains("image_bytes")) {
        TRY_ASSIGN(v.image_bytes, field<uint64_t>(j, "image_bytes"));
        TRY_ASSIGN(v.memory_bytes, field<uint64_t>(j, "memory_bytes"));
        TRY_ASSIGN(auto hashes, field<std::string>(j, "memory_hashes_xxh3"));
        TRY_ASSIGN(v.memory_hashes_xxh3, vvmm::parse_hex_digest(hashes));
        TRY_ASSIGN(v.parity_bytes, field<uint64_t>(j, "parity_bytes"));
    }
    return v;
}

json vm_to_json(const EpochVm& v)
{
    json j = {{"name", v.name}, {"node", v.node}, {"id", v.id}, {"manifest_xxh3", vvmm::hex_digest(v.manifest_xxh3)},
              {"bytes", v.bytes}, {"pause_ms", v.pause_ms}, {"total_ms", v.total_ms}, {"incremental", v.incremental}};
    if (v.image_bytes != 0) {
        j["image_bytes"] = v.image_bytes;
        j["memory_bytes"] = v.memory_bytes;
        j["memory_hashes_xxh3"] = vvmm::hex_digest(v.memory_hashes_xxh3);
        j["parity_bytes"] = v.parity_bytes;
    }
    return j;
}

}  // namespace

json to_json(const ClusterManifest& m)
{
    json vms = json::array();
    for (const auto& v : m.vms) vms.push_back(vm_to_json(v));
    json j = {{"format", kFormat}, {"format_version", kFormatVersion}, {"cluster", m.cluster}, {"epoch", m.epoch},
              {"mode", m.mode}, {"incremental", m.incremental}, {"created", m.created}, {"epoch_ms", m.epoch_ms},
              {"vms", vms}};
    if (!m.parity.empty()) {
        j["parity"] = json::array();
        for (const auto& b : m.parity) j["parity"].push_back(to_json(b));
    }
    return j;
}

json to_json(const EpochParityBlock& b)
{
    return {{"set", b.set}, {"index", b.index}, {"holder", b.holder}, {"length", b.length},
            {"record_xxh3", vvmm::hex_digest(b.record_xxh3)}};
}

Result<EpochParityBlock> parity_block_from_json(const json& j)
{
    EpochParityBlock b;
    TRY_ASSIGN(b.set, field<uint32_t>(j, "set"));
    TRY_ASSIGN(b.index, field<unsigned>(j, "index"));
    TRY_ASSIGN(b.holder, field<std::string>(j, "holder"));
    if (!safe_name(b.holder)) return Error("a parity holder is not a plain name");
    TRY_ASSIGN(b.length, field<uint64_t>(j, "length"));
    TRY_ASSIGN(auto digest, field<std::string>(j, "record_xxh3"));
    TRY_ASSIGN(b.record_xxh3, vvmm::parse_hex_digest(digest));
    return b;
}

Result<ClusterManifest> cluster_manifest_from_json(const json& j)
{
    ClusterManifest m;
    TRY_ASSIGN(auto format, field<std::string>(j, "format"));
    if (format != kFormat) return Error("not a vvmm cluster epoch manifest");
    TRY_ASSIGN(unsigned version, field<unsigned>(j, "format_version"));
    if (version == 0 || version > kFormatVersion)
        return Error("cluster manifest format version " + std::to_string(version) + " is not supported");
    TRY_ASSIGN(m.cluster, field<std::string>(j, "cluster"));
    TRY_ASSIGN(m.epoch, field<uint64_t>(j, "epoch"));
    if (m.epoch == 0) return Error("epoch 0");
    TRY_ASSIGN(m.mode, field<std::string>(j, "mode"));
    TRY_ASSIGN(m.incremental, field<bool>(j, "incremental"));
    TRY_ASSIGN(m.created, field<std::string>(j, "created"));
    TRY_ASSIGN(m.epoch_ms, number(j, "epoch_ms"));
    if (!j.contains("vms") || !j.at("vms").is_array() || j.at("vms").empty()) return Error("field 'vms' is not a list of VMs");
    for (const auto& v : j.at("vms")) {
        TRY_ASSIGN(auto vm, vm_from(v));
        if (std::any_of(m.vms.begin(), m.vms.end(), [&](const EpochVm& o) { return o.name == vm.name; }))
            return Error("VM '" + vm.name + "' is listed twice");
        m.vms.push_back(std::move(vm));
    }
    if (j.contains("parity")) {
        if (!j.at("parity").is_array()) return Error("field 'parity' is not a list of parity blocks");
        for (const auto& b : j.at("parity")) {
            TRY_ASSIGN(auto block, parity_block_from_json(b));
            m.parity.push_back(std::move(block));
        }
    }
    return m;
}

std::string vm_checkpoint_root(const std::string& checkpoint_dir, const std::string& vm)
{
    return checkpoint_dir + "/" + vm;
}

Result<void> write_cluster_manifest(const std::string& checkpoint_dir, const ClusterManifest& m,
                                    const ckpt::SealKey& key)
{
    const std::string dir = checkpoint_dir + "/epochs";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error("cannot create " + dir + ": " + ec.message());
    json sealed = to_json(m);
    ckpt::seal_manifest(sealed, key);
    const std::string text = sealed.dump(1) + "\n";
    const std::string tmp = ".tmp-" + epoch_name(m.epoch) + "-" + std::to_string(::getpid()) + ".json";
    // A leftover of a crashed earlier process with the same pid (common in
    // containers) would make the exclusive create fail: it is ours to remove.
    std::filesystem::remove(dir + "/" + tmp, ec);
    if (auto written = ckpt::write_durable(dir, tmp, {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
        !written) {
        std::filesystem::remove(dir + "/" + tmp, ec);
        return written.error();
    }
    const std::string final_path = dir + "/" + epoch_name(m.epoch) + ".json";
    std::filesystem::rename(dir + "/" + tmp, final_path, ec);
    if (ec) {
        std::filesystem::remove(dir + "/" + tmp, ec);
        return Error("cannot publish " + final_path);
    }
    return ckpt::fsync_dir(dir);
}

Result<ClusterManifest> read_cluster_manifest(const std::string& checkpoint_dir, uint64_t epoch,
                                              const ckpt::SealPolicy& policy)
{
    const std::string path = checkpoint_dir + "/epochs/" + epoch_name(epoch) + ".json";
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec)))
        return Error("epoch " + std::to_string(epoch) + " was not committed (no " + path + ")");
    TRY_ASSIGN(auto text, read_small_file(path, kMaxManifestBytes, "cluster manifest", Symlinks::refuse));
    const json j = json::parse(text, nullptr, false);
    if (j.is_discarded()) return Error(path + " is not valid JSON");
    if (!j.is_object()) return Error(path + " is not a cluster manifest");
    TRY(ckpt::check_manifest_seal(j, policy, path));
    auto m = cluster_manifest_from_json(j);
    if (!m) return m.error().context(path);
    if (m->epoch != epoch) return Error(path + " describes epoch " + std::to_string(m->epoch));
    return m;
}

std::vector<uint64_t> committed_epochs(const std::string& checkpoint_dir)
{
    std::vector<uint64_t> out;
    std::error_code ec;
    // Without exceptions: a directory that cannot be read just ends the list.
    for (std::filesystem::directory_iterator it(checkpoint_dir + "/epochs", ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.size() < 6 || !name.ends_with(".json") || name[0] == '.') continue;
        // Anything else (too long a number, other characters) is not ours: ignored.
        const auto epoch = parse_unsigned<uint64_t>(std::string_view(name).substr(0, name.size() - 5));
        // Only the name the initiator writes: a stray "9.json" beside
        // "000009.json" must not count as an epoch, nor the same one twice.
        if (!epoch || *epoch == 0 || name != epoch_name(*epoch) + ".json") continue;
        out.push_back(*epoch);
    }
    std::sort(out.begin(), out.end());
    return out;
}

Result<void> remove_epochs_before(const std::string& checkpoint_dir, uint64_t epoch)
{
    for (uint64_t older : committed_epochs(checkpoint_dir)) {
        if (older >= epoch) break;
        const std::string path = checkpoint_dir + "/epochs/" + epoch_name(older) + ".json";
        std::error_code ec;
        // Another VMM of the node may have removed it first.
        if (!std::filesystem::remove(path, ec) && ec) return Error("cannot remove " + path + ": " + ec.message());
    }
    return ok();
}

RecentEpochs recent_epochs(const std::string& checkpoint_dir, size_t budget, const ckpt::SealPolicy& policy)
{
    const auto numbers = committed_epochs(checkpoint_dir);
    std::vector<json> newest_first;
    size_t used = 0;
    for (auto it = numbers.rbegin(); it != numbers.rend(); ++it) {
        auto m = read_cluster_manifest(checkpoint_dir, *it, policy);
        json entry = m ? to_json(m.value()) : json{{"epoch", *it}, {"error", m.error().message()}};
        used += entry.dump().size() + 1;
        if (used > budget) break;
        newest_first.push_back(std::move(entry));
    }
    RecentEpochs out;
    out.omitted = numbers.size() - newest_first.size();
    for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it) out.epochs.push_back(std::move(*it));
    return out;
}

Result<uint64_t> vm_manifest_digest(const std::string& vm_checkpoint_dir)
{
    TRY_ASSIGN(auto text, read_small_file(vm_checkpoint_dir + "/manifest.json", kMaxManifestBytes, "checkpoint manifest",
                                          Symlinks::refuse));
    return ckpt::digest_of({reinterpret_cast<const uint8_t*>(text.data()), text.size()});
}

}  // namespace vvmm::coord
