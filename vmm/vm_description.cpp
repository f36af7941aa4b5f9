#include "vmm/vm_description.hpp"

#include <map>
#include <sstream>

#include "vmm/base/size_parse.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"

namespace vvmm::vmm {
namespace {

std::vector<std::string> split(std::string_view text, char sep)
{
    std::vector<std::string> parts;
    size_t start = 0;
    for (;;) {
        const size_t end = text.find(sep, start);
        parts.emplace_back(text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
        if (end == std::string_view::npos) return parts;
        start = end + 1;
    }
}

}  // namespace

std::string cmdline_with_default(std::string_view extra)
{
    return extra.empty() ? std::string(kDefaultCmdline) : std::string(kDefaultCmdline) + " " + std::string(extra);
}

Result<void> validate_vm_description(const VmDescription& vm)
{
    if (vm.kernel.empty()) return Error("--kernel is required");
    if (vm.cpus < kMinCpus || vm.cpus > kMaxCpus)
        return Error("--cpus " + std::to_string(vm.cpus) + " is out of range (1.." + std::to_string(kMaxCpus) + ")");
    if (vm.mem_bytes < layout::kMinMemory || vm.mem_bytes > layout::kMaxMemory)
        return Error("--mem " + format_size(vm.mem_bytes) + " is out of range (" + format_size(layout::kMinMemory) +
                     ".." + format_size(layout::kMaxMemory) + ")");
    if (vm.mem_bytes % (2 << 20)) return Error("--mem must be a multiple of 2 MiB");
    if (vm.cmdline.find('\0') != std::string::npos) return Error("--cmdline contains a NUL byte");
    return ok();
}

Result<DiskDescription> parse_disk_flag(const std::string& text)
{
    DiskDescription disk;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) {
        const auto eq = item.find('=');
        if (eq == std::string::npos) return Error("--disk: '" + item + "' is not key=value");
        const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        if (key == "path") {
            disk.path = value;
        } else if (key == "readonly" || key == "ro") {
            if (value == "on" || value == "true" || value == "1") disk.readonly = true;
            else if (value == "off" || value == "false" || value == "0") disk.readonly = false;
            else return Error("--disk: readonly must be on or off, not '" + value + "'");
        } else if (key == "id" || key == "serial") {
            if (value.size() > kMaxDiskIdLength) return Error("--disk: id '" + value + "' is longer than 20 bytes");
            disk.id = value;
        } else {
            return Error("--disk: unknown key '" + key + "' (expected path, readonly, id)");
        }
    }
    if (disk.path.empty()) return Error("--disk needs path=FILE");
    return disk;
}

Result<NicDescription> parse_nic_flag(std::string_view text)
{
    const auto items = split(text, ',');
    if (items[0] != "peer") return Error("unknown network backend '" + items[0] + "' (supported: peer)");
    std::map<std::string, std::string> values;
    for (size_t i = 1; i < items.size(); ++i) {
        const std::string& item = items[i];
        const size_t eq = item.find('=');
        if (eq == std::string::npos) return Error("'" + item + "' is not key=value");
        const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        if (key != "id" && key != "listen" && key != "peers" && key != "mac")
            return Error("unknown key '" + key + "' (known: id, listen, peers, mac)");
        if (value.empty()) return Error("key '" + key + "' has an empty value");
        if (!values.emplace(key, value).second) return Error("key '" + key + "' is given twice");
    }
    if (!values.contains("id")) return Error("missing id= (this VMM's name in the cluster)");
    if (!values.contains("listen")) return Error("missing listen= (the address other VMMs connect to)");
    NicDescription nic{values["id"], values["listen"], {}, values["mac"]};
    if (values.contains("peers")) nic.peers = split(values["peers"], ';');
    return nic;
}

}  // namespace vvmm::vmm
