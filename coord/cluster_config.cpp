#include "coord/cluster_config.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <map>
#include <sstream>

#include <toml++/toml.h>

#include "ckpt/checkpoint_mode.hpp"
#include "vmm/base/size_parse.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/memory_layout.hpp"
#include "vmm/mp_table.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::coord {

namespace fs = std::filesystem;

namespace {

// A config is a few KiB; anything this large is not one.
constexpr uintmax_t kMaxConfigBytes = 1 << 20;
// x86 Linux's COMMAND_LINE_SIZE is 2048 (NUL included); the loader checks the
// kernel's own limit later, but a config whose peer list cannot fit any
// kernel should fail here, at the config.
constexpr size_t kMaxGuestCmdline = 2047;

std::string address_with_port(const std::string& address, unsigned port)
{
    // IPv6 literals need brackets so the port's ':' is not ambiguous.
    if (address.find(':') != std::string::npos) return "[" + address + "]:" + std::to_string(port);
    return address + ":" + std::to_string(port);
}

std::string type_name(const toml::node& n)
{
    switch (n.type()) {
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
    }
}

std::string where(const toml::source_position& p)
{
    return std::to_string(p.line) + ":" + std::to_string(p.column);
}

// VM and node names become directory and peer ids: keep them to a safe set
// (the same rule as net::validate_peer_id) and refuse the two that are not
// directory names.
std::string name_problem(const std::string& name)
{
    if (name.empty() || name.size() > 64) return "must be 1..64 characters";
    for (char c : name) {
        const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                             c == '.' || c == '_' || c == '-';
        if (!allowed) return "may only contain letters, digits, '.', '_' and '-'";
    }
    if (name == "." || name == "..") return "is not usable as a directory name";
    return "";
}

// "a.b.c.d/len": decimal octets without leading zeros (which some tools
// read as octal), prefix length 1..32.
bool parse_guest_ip(const std::string& text, std::string& address_out)
{
    const auto slash = text.find('/');
    if (slash == std::string::npos) return false;
    const std::string address = text.substr(0, slash), len = text.substr(slash + 1);
    if (len.empty() || len.size() > 2 || !std::all_of(len.begin(), len.end(), ::isdigit)) return false;
    if (len.size() == 2 && len[0] == '0') return false;
    const int prefix = std::stoi(len);
    if (prefix < 1 || prefix > 32) return false;
    int octets = 0;
    size_t pos = 0;
    while (true) {
        size_t end = pos;
        while (end < address.size() && std::isdigit(static_cast<unsigned char>(address[end]))) ++end;
        const size_t digits = end - pos;
        if (digits == 0 || digits > 3 || (digits > 1 && address[pos] == '0')) return false;
        if (std::stoi(address.substr(pos, digits)) > 255) return false;
        ++octets;
        if (end == address.size()) break;
        if (address[end] != '.' || octets == 4) return false;
        pos = end + 1;
    }
    if (octets != 4) return false;
    address_out = address;
    return true;
}

struct VmPositions {
    toml::source_position table, name, port, mac, ip, disks;
};

class Checker {
public:
    Checker(std::string shown, fs::path base) : shown_(std::move(shown)), base_(std::move(base)) {}

    void error(const toml::source_position& at, const std::string& what)
    {
        errors_.push_back(shown_ + ":" + where(at) + ": " + what);
    }
    bool failed() const { return !errors_.empty(); }
    Error result() const
    {
        std::string all;
        for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
        return Error(all);
    }

    // Relative paths are relative to the config file's directory, so a
    // config works the same from any working directory.
    fs::path resolve(const std::string& p) const
    {
        const fs::path path(p);
        return (path.is_absolute() ? path : base_ / path).lexically_normal();
    }

    void check_keys(const toml::table& t, const std::string& what, std::initializer_list<std::string_view> known)
    {
        for (const auto& [key, value] : t) {
            (void)value;
            if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
            std::string list;
            for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
            error(key.source().begin, "unknown key '" + std::string(key.str()) + "' in " + what + " (known: " + list + ")");
        }
    }

    // nullptr if absent (an error if required) or of the wrong type (an error).
    const toml::node* get(const toml::table& t, std::string_view key, const std::string& what, bool required,
                          toml::node_type type)
    {
        const toml::node* n = t.get(key);
        if (!n) {
            if (required) error(t.source().begin, what + " is missing required key '" + std::string(key) + "'");
            return nullptr;
        }
        if (n->type() != type) {
            const std::string want = type == toml::node_type::string    ? "a string"
                                     : type == toml::node_type::boolean ? "true or false"
                                     : type == toml::node_type::integer ? "an integer"
                                     : type == toml::node_type::array   ? "an array of strings"
                                                                        : "a table";
            error(n->source().begin, "'" + std::string(key) + "' in " + what + " must be " + want + ", not " +
                                         type_name(*n));
            return nullptr;
        }
        return n;
    }

    std::optional<std::string> get_string(const toml::table& t, std::string_view key, const std::string& what,
                                          bool required)
    {
        const toml::node* n = get(t, key, what, required, toml::node_type::string);
        if (!n) return std::nullopt;
        return std::string(n->as_string()->get());
    }

    std::optional<int64_t> get_int(const toml::table& t, std::string_view key, const std::string& what, bool required)
    {
        const toml::node* n = get(t, key, what, required, toml::node_type::integer);
        if (!n) return std::nullopt;
        return n->as_integer()->get();
    }

    std::optional<bool> get_bool(const toml::table& t, std::string_view key, const std::string& what)
    {
        const toml::node* n = get(t, key, what, false, toml::node_type::boolean);
        if (!n) return std::nullopt;
        return n->as_boolean()->get();
    }

    // A non-empty string naming a file; resolved.
    std::optional<fs::path> get_path(const toml::table& t, std::string_view key, const std::string& what,
                                     bool required)
    {
        auto s = get_string(t, key, what, required);
        if (!s) return std::nullopt;
        if (s->empty() || s->find('\0') != std::string::npos) {
            error(t.get(key)->source().begin, "'" + std::string(key) + "' in " + what + " must be a non-empty path");
            return std::nullopt;
        }
        return resolve(*s);
    }

    void check_name(const toml::table& t, const std::string& kind, const std::string& name)
    {
        const std::string problem = name_problem(name);
        if (!problem.empty()) error(t.get("name")->source().begin, kind + " name '" + name + "' " + problem);
    }

    // File checks: `what` is e.g. "kernel", reported at `at`.
    void check_file_exists(const toml::source_position& at, const std::string& what, const fs::path& path,
                           bool block_ok)
    {
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0) {
            error(at, what + " '" + path.string() + "': " + std::strerror(errno));
            return;
        }
        if (!S_ISREG(st.st_mode) && !(block_ok && S_ISBLK(st.st_mode)))
            error(at, what + " '" + path.string() + "' is not a regular file");
    }

    void check_secret(const toml::source_position& at, const fs::path& path)
    {
        const std::string make = " (create it with: head -c 32 /dev/urandom > " + path.string() + "; chmod 600 " +
                                 path.string() + ")";
        struct stat st {};
        if (::stat(path.c_str(), &st) < 0) {
            error(at, "secret file '" + path.string() + "': " + std::strerror(errno) + make);
            return;
        }
        if (!S_ISREG(st.st_mode)) {
            error(at, "secret file '" + path.string() + "' is not a regular file");
        } else if (st.st_size == 0) {
            error(at, "secret file '" + path.string() + "' is empty" + make);
        } else if (st.st_mode & 077) {
            char mode[8];
            std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
            error(at, "secret file '" + path.string() + "' is accessible by group or others (mode " + mode +
                          "); run chmod 600 " + path.string());
        }
    }

private:
    std::string shown_;
    fs::path base_;
    std::vector<std::string> errors_;
};

const toml::node* array_of_tables(Checker& c, const toml::table& root, std::string_view key)
{
    const toml::node* n = root.get(key);
    if (!n) return nullptr;
    if (!n->is_array_of_tables()) {
        c.error(n->source().begin, "'" + std::string(key) + "' must be written as [[" + std::string(key) +
                                       "]] tables, not " + type_name(*n));
        return nullptr;
    }
    return n;
}

// Where the [cluster] keys of the checkpoint policy were, for errors found
// once the nodes and VMs are known.
struct PolicyPositions {
    toml::source_position table, redundancy, set_size;
    bool checkpoint_dir_given = false;
};

std::optional<Redundancy> parse_redundancy(const std::string& text)
{
    if (text == "none") return Redundancy{Redundancy::Kind::none, 0};
    if (text == "partner") return Redundancy{Redundancy::Kind::partner, 1};
    if (text == "xor") return Redundancy{Redundancy::Kind::xor_parity, 1};
    if (text.size() == 4 && text.rfind("rs:", 0) == 0 && text[3] >= '1' && text[3] <= '0' + int{kMaxParityBlocks})
        return Redundancy{Redundancy::Kind::reed_solomon, static_cast<unsigned>(text[3] - '0')};
    return std::nullopt;
}

std::optional<Seconds> get_duration(Checker& c, const toml::table& t, std::string_view key, const std::string& what)
{
    auto text = c.get_string(t, key, what, false);
    if (!text) return std::nullopt;
    auto d = parse_duration(*text);
    if (!d) {
        c.error(t.get(key)->source().begin, std::string(key) + " in " + what + ": " + d.error().message());
        return std::nullopt;
    }
    return d.value();
}

// storage, memory_dir, redundancy, set_size, interval, mtbf, persist_every,
// persist_dir: the keys of issue 12's diskless checkpoints.
void parse_checkpoint_policy(Checker& c, const toml::table& t, ClusterConfig& cfg, PolicyPositions& pos)
{
    const std::string what = "[cluster]";
    auto at = [&](std::string_view key) { return t.get(key)->source().begin; };
    pos.table = t.source().begin;
    if (auto storage = c.get_string(t, "storage", what, false)) {
        if (*storage == "memory") cfg.storage = CheckpointStorage::memory;
        else if (*storage != "disk")
            c.error(at("storage"), "unknown storage '" + *storage + "' (expected \"disk\" or \"memory\")");
    }
    const bool memory = cfg.storage == CheckpointStorage::memory;
    auto only_in_memory = [&](std::string_view key) {
        if (t.get(key) && !memory)
            c.error(at(key), "'" + std::string(key) + "' applies to storage = \"memory\" only");
    };
    if (auto p = c.get_path(t, "memory_dir", what, false)) cfg.memory_dir = *p;
    else if (memory && !cfg.name.empty()) cfg.memory_dir = "/dev/shm/vvmm/" + cfg.name;
    only_in_memory("memory_dir");
    if (memory && pos.checkpoint_dir_given)
        c.error(at("checkpoint_dir"), "checkpoint_dir is for storage = \"disk\"; with \"memory\" each node keeps its "
                                      "checkpoints in memory_dir/<node> (and persist_dir for persisted copies)");
    if (!memory && !pos.checkpoint_dir_given && !t.get("checkpoint_dir"))
        c.error(pos.table, what + " is missing required key 'checkpoint_dir'");

    if (memory) cfg.redundancy = {Redundancy::Kind::xor_parity, 1};
    if (auto r = c.get_string(t, "redundancy", what, false)) {
        pos.redundancy = at("redundancy");
        if (auto parsed = parse_redundancy(*r)) cfg.redundancy = *parsed;
        else
            c.error(pos.redundancy, "unknown redundancy '" + *r + "' (expected \"none\", \"partner\", \"xor\" or \"rs:K\" with K 1.." +
                                        std::to_string(kMaxParityBlocks) + ")");
    } else {
        pos.redundancy = pos.table;
    }
    only_in_memory("redundancy");
    if (auto n = c.get_int(t, "set_size", what, false)) {
        pos.set_size = at("set_size");
        if (*n < 1 || *n > 32) c.error(pos.set_size, "set_size " + std::to_string(*n) + " is out of range (1..32)");
        else if (cfg.redundancy.kind == Redundancy::Kind::partner)
            c.error(pos.set_size, "set_size does not go with redundancy = \"partner\" (each VM is its own set)");
        else cfg.set_size = static_cast<unsigned>(*n);
    } else {
        pos.set_size = pos.redundancy;
    }
    only_in_memory("set_size");

    if (auto text = c.get_string(t, "interval", what, false)) {
        if (*text == "auto") {
            cfg.schedule.kind = EpochSchedule::Kind::automatic;
        } else if (auto d = parse_duration(*text); !d) {
            c.error(at("interval"), "interval in " + what + ": " + d.error().message() + " (or \"auto\")");
        } else if (d.value() < Seconds(1)) {
            c.error(at("interval"), "interval " + *text + " is shorter than 1s");
        } else {
            cfg.schedule = {EpochSchedule::Kind::fixed, d.value()};
        }
    }
    cfg.mtbf = get_duration(c, t, "mtbf", what);
    if (cfg.schedule.kind == EpochSchedule::Kind::automatic && !cfg.mtbf && !t.get("mtbf"))
        c.error(at("interval"), "interval = \"auto\" needs mtbf (the nodes' mean time between failures, e.g. \"24h\")");

    if (auto n = c.get_int(t, "persist_every", what, false)) {
        if (*n < 1 || *n > 1000000) c.error(at("persist_every"), "persist_every " + std::to_string(*n) + " is out of range (1..1000000)");
        else cfg.persist_every = static_cast<unsigned>(*n);
    }
    if (auto p = c.get_path(t, "persist_dir", what, false)) cfg.persist_dir = *p;
    only_in_memory("persist_every");
    only_in_memory("persist_dir");
    if (t.get("persist_every") && !t.get("persist_dir"))
        c.error(at("persist_every"), "persist_every needs persist_dir (where the persisted epochs go)");
    if (t.get("persist_dir") && !t.get("persist_every"))
        c.error(at("persist_dir"), "persist_dir needs persist_every (which committed epochs to copy there)");
}

}  // namespace

Result<ParityLayout> parity_layout_of(const ClusterConfig& cfg)
{
    PlacementInput input;
    input.set_size = cfg.set_size;
    input.parity_count = cfg.redundancy.parity_count;
    // Parity is kept by a VMM of its node: a node without VMs has none.
    for (const auto& n : cfg.nodes)
        if (!cfg.vms_on(n.name).empty()) input.nodes.push_back(n.name);
    for (const auto& v : cfg.vms) input.vms.emplace_back(v.name, v.node);
    return place_parity(input);
}

namespace {

// The parity sets of a diskless cluster; an impossible layout is one error
// at the redundancy (or set_size) naming the numbers.
void place_parity_for(Checker& c, ClusterConfig& cfg, const PolicyPositions& pos)
{
    if (cfg.storage != CheckpointStorage::memory || cfg.redundancy.kind == Redundancy::Kind::none) return;
    const unsigned k = cfg.redundancy.parity_count;
    const bool partner = cfg.redundancy.kind == Redundancy::Kind::partner;
    if (cfg.set_size == 0) {
        // Default: sets of up to 4, as many as the nodes allow.
        size_t hosts = 0;
        for (const auto& n : cfg.nodes) hosts += !cfg.vms_on(n.name).empty();
        const size_t room = hosts > k ? hosts - k : 1;
        cfg.set_size = partner ? 1 : static_cast<unsigned>(std::min<size_t>(4, room));
    }
    std::string idle;
    for (const auto& n : cfg.nodes)
        if (cfg.vms_on(n.name).empty()) idle += (idle.empty() ? "" : ", ") + n.name;
    auto layout = parity_layout_of(cfg);
    if (!layout) {
        c.error(pos.set_size, "redundancy \"" + cfg.redundancy.name() + "\": " + layout.error().message() +
                                  (idle.empty() ? "" : " (nodes without VMs hold no parity: " + idle + ")"));
        return;
    }
    cfg.parity = std::move(layout).value();
}

}  // namespace

std::string Redundancy::name() const
{
    switch (kind) {
    case Kind::none: return "none";
    case Kind::partner: return "partner";
    case Kind::xor_parity: return "xor";
    case Kind::reed_solomon: return "rs:" + std::to_string(parity_count);
    }
    return "?";
}

std::filesystem::path ClusterConfig::node_checkpoint_dir(std::string_view node_name) const
{
    if (storage == CheckpointStorage::memory) return memory_dir / std::string(node_name);
    return checkpoint_dir;
}

const NodeConfig* ClusterConfig::node(std::string_view wanted) const
{
    for (const auto& n : nodes)
        if (n.name == wanted) return &n;
    return nullptr;
}

const VmEntry* ClusterConfig::vm(std::string_view wanted) const
{
    for (const auto& v : vms)
        if (v.name == wanted) return &v;
    return nullptr;
}

std::vector<const VmEntry*> ClusterConfig::vms_on(std::string_view node_name) const
{
    std::vector<const VmEntry*> out;
    for (const auto& v : vms)
        if (v.node == node_name) out.push_back(&v);
    return out;
}

net::SocketAddress ClusterConfig::listen_address(const VmEntry& v) const
{
    const NodeConfig* n = node(v.node);
    if (!n) return {};
    auto a = net::SocketAddress::parse(address_with_port(n->address, v.port));
    return a ? a.value() : net::SocketAddress{};
}

std::vector<net::SocketAddress> ClusterConfig::peers_of(const VmEntry& v) const
{
    std::vector<net::SocketAddress> out;
    for (const auto& other : vms)
        if (&other != &v && other.name != v.name) out.push_back(listen_address(other));
    return out;
}

std::string ClusterConfig::guest_cmdline(const VmEntry& v) const
{
    std::string out = v.machine.cmdline;
    if (!out.empty()) out += ' ';
    out += "vvmm.macs=";
    for (size_t i = 0; i < vms.size(); ++i) out += (i ? "," : "") + vms[i].mac.to_string();
    if (!v.ip) return out;
    out += " vvmm.ip=" + *v.ip + " vvmm.peers=";
    bool first = true;
    for (const auto& other : vms) {
        if (other.name == v.name || !other.ip) continue;
        out += (first ? "" : ",") + other.ip->substr(0, other.ip->find('/'));
        first = false;
    }
    return out;
}

std::vector<std::string> ClusterConfig::peer_names(const VmEntry& v) const
{
    std::vector<std::string> out;
    for (const auto& other : vms)
        if (other.name != v.name) out.push_back(other.name);
    return out;
}

vmm::NicDescription ClusterConfig::nic(const VmEntry& v) const
{
    vmm::NicDescription out{v.name, listen_address(v).to_string(), {}, v.mac.to_string()};
    for (const auto& p : peers_of(v)) out.peers.push_back(p.to_string());
    return out;
}

vmm::VmDescription ClusterConfig::description(const VmEntry& v) const
{
    vmm::VmDescription out = v.machine;
    out.cmdline = vmm::cmdline_with_default(guest_cmdline(v));
    out.nics = {nic(v)};
    return out;
}

namespace {

using NameIndex = std::map<std::string, toml::source_position>;

std::optional<toml::table> parse_toml(Checker& c, std::string_view text, const fs::path& file)
{
#if TOML_EXCEPTIONS
    try {
        return toml::parse(text, file.string());
    } catch (const toml::parse_error& e) {
        c.error(e.source().begin, "TOML syntax error: " + std::string(e.description()));
        return std::nullopt;
    }
#else
    toml::parse_result parsed = toml::parse(text, file.string());
    if (!parsed) {
        c.error(parsed.error().source().begin, "TOML syntax error: " + std::string(parsed.error().description()));
        return std::nullopt;
    }
    return std::move(parsed).table();
#endif
}

// How messages name the index-th [[label]] element.
std::string element_what(const std::optional<std::string>& name, const std::string& label, size_t index)
{
    return name ? "[[" + label + "]] '" + *name + "'" : "[[" + label + "]] #" + std::to_string(index);
}

// The naming rules for a node's or VM's name, and no two alike (the second
// is reported with the first's position). False for a duplicate.
bool claim_name(Checker& c, const toml::table& t, const std::string& kind, const std::string& name, NameIndex& names)
{
    c.check_name(t, kind, name);
    const auto at = t.get("name")->source().begin;
    if (auto [it, fresh] = names.emplace(name, at); !fresh) {
        c.error(at, "duplicate " + kind + " name '" + name + "' (first at " + where(it->second) + ")");
        return false;
    }
    return true;
}

// Where [cluster]'s paths were given, for the checks of the files they name.
struct ClusterPositions {
    toml::source_position secret_file{1, 1}, checkpoint_dir{1, 1};
    PolicyPositions policy;
};

void parse_cluster_table(Checker& c, const toml::table& root, ClusterConfig& cfg, ClusterPositions& pos)
{
    const toml::node* cn = root.get("cluster");
    if (!cn) return c.error({1, 1}, "missing [cluster] table");
    if (!cn->is_table()) return c.error(cn->source().begin, "'cluster' must be a [cluster] table, not " + type_name(*cn));
    const toml::table& t = *cn->as_table();
    const std::string what = "[cluster]";
    c.check_keys(t, what, {"name", "secret_file", "checkpoint_dir", "mode", "storage", "memory_dir", "redundancy",
                           "set_size", "interval", "mtbf", "persist_every", "persist_dir"});
    if (auto name = c.get_string(t, "name", what, true)) {
        cfg.name = *name;
        c.check_name(t, "cluster", *name);
    }
    if (auto p = c.get_path(t, "secret_file", what, true)) {
        cfg.secret_file = *p;
        pos.secret_file = t.get("secret_file")->source().begin;
    }
    if (auto p = c.get_path(t, "checkpoint_dir", what, false)) {
        cfg.checkpoint_dir = *p;
        pos.checkpoint_dir = t.get("checkpoint_dir")->source().begin;
        pos.policy.checkpoint_dir_given = true;
    }
    if (auto mode = c.get_string(t, "mode", what, false)) {
        if (ckpt::parse_mode(*mode))
            cfg.mode = *mode;
        else
            c.error(t.get("mode")->source().begin,
                    "unknown mode '" + *mode + "' (expected " + ckpt::kCheckpointModesText + ")");
    }
    parse_checkpoint_policy(c, t, cfg, pos.policy);
}

// ---- [[node]] ---------------------------------------------------------------

std::optional<NodeConfig> parse_node(Checker& c, const toml::table& t, size_t index, NameIndex& node_names)
{
    auto name = c.get_string(t, "name", element_what(std::nullopt, "node", index), true);
    const std::string what = element_what(name, "node", index);
    c.check_keys(t, what, {"name", "address"});
    NodeConfig node;
    bool good = name && claim_name(c, t, "node", *name, node_names);
    if (name) node.name = *name;
    auto address = c.get_string(t, "address", what, true);
    if (!address) return std::nullopt;
    node.address = *address;
    const auto at = t.get("address")->source().begin;
    auto parsed = net::SocketAddress::parse(address_with_port(*address, 1));
    if (!parsed || address->find('[') != std::string::npos) {
        c.error(at, "address '" + *address + "' of " + what + " is not a numeric IPv4 or IPv6 address");
        return std::nullopt;
    }
    if (parsed->is_wildcard()) {
        c.error(at, "address '" + *address + "' of " + what + " is a wildcard; peers need an address they can reach");
        return std::nullopt;
    }
    return good ? std::optional<NodeConfig>(node) : std::nullopt;
}

void parse_nodes(Checker& c, const toml::table& root, ClusterConfig& cfg, NameIndex& node_names)
{
    if (const toml::node* arr = array_of_tables(c, root, "node")) {
        size_t index = 0;
        for (const toml::node& element : *arr->as_array())
            if (auto node = parse_node(c, *element.as_table(), ++index, node_names)) cfg.nodes.push_back(*node);
    }
    if (!root.get("node")) c.error({1, 1}, "no [[node]] defined");
}

// ---- [[vm]] -----------------------------------------------------------------

// A size string ("256M") or a plain number of bytes, within what a VM may have.
std::optional<uint64_t> parse_vm_mem(Checker& c, const toml::node& mem, const std::string& what)
{
    std::optional<std::string> text_size;
    if (mem.is_string()) text_size = std::string(mem.as_string()->get());
    else if (mem.is_integer() && mem.as_integer()->get() >= 0)
        text_size = std::to_string(mem.as_integer()->get());
    const auto at = mem.source().begin;
    if (!text_size) {
        c.error(at, "'mem' in " + what + " must be a size like \"256M\", not " + type_name(mem));
        return std::nullopt;
    }
    auto bytes = parse_size(*text_size);
    if (!bytes) {
        c.error(at, "mem of " + what + ": " + bytes.error().message());
    } else if (*bytes < vmm::layout::kMinMemory || *bytes > vmm::layout::kMaxMemory) {
        c.error(at, "mem " + format_size(*bytes) + " of " + what + " is out of range (" +
                        format_size(vmm::layout::kMinMemory) + ".." + format_size(vmm::layout::kMaxMemory) + ")");
    } else if (*bytes % (2 << 20)) {
        c.error(at, "mem of " + what + " must be a multiple of 2 MiB");
    } else {
        return *bytes;
    }
    return std::nullopt;
}

void check_vm_cmdline(Checker& c, const toml::source_position& at, const std::string& cmdline, const std::string& what)
{
    if (cmdline.find('\0') != std::string::npos) return c.error(at, "cmdline of " + what + " contains a NUL byte");
    // The parameters guest_cmdline generates; a second copy from the user
    // would be ambiguous to the guest. Other vvmm.* words (the Linux test
    // initramfs's vvmm.run=) are the guest's.
    std::istringstream words(cmdline);
    std::string word;
    while (words >> word)
        if (word.rfind("vvmm.macs=", 0) == 0 || word.rfind("vvmm.ip=", 0) == 0 || word.rfind("vvmm.peers=", 0) == 0)
            return c.error(at, "cmdline of " + what + " sets '" + word +
                                   "'; vvmm.macs, vvmm.ip and vvmm.peers are generated from the config");
}

// False when the VM cannot be used (a bad or mistyped mac).
bool parse_vm_mac(Checker& c, const toml::table& t, const std::string& what, VmEntry& vm, VmPositions& pos)
{
    if (!t.get("mac")) {
        pos.mac = pos.table;
        vm.mac = net::MacAddress::derived_from_id(vm.name);
        return true;
    }
    auto mac = c.get_string(t, "mac", what, false);
    if (!mac) return false;
    pos.mac = t.get("mac")->source().begin;
    auto parsed = net::MacAddress::parse(*mac);
    if (!parsed) {
        c.error(pos.mac, "mac of " + what + ": " + parsed.error().message());
        return false;
    }
    if (parsed->is_multicast() || parsed->is_zero()) {
        c.error(pos.mac, "mac " + *mac + " of " + what + " is not a unicast address");
        return false;
    }
    vm.mac = *parsed;
    return true;
}

void parse_vm_disks(Checker& c, const toml::table& t, const std::string& what, bool check_files, VmEntry& vm,
                    VmPositions& pos)
{
    const toml::node* disks = c.get(t, "disks", what, false, toml::node_type::array);
    if (!disks) return;
    pos.disks = disks->source().begin;
    for (const toml::node& d : *disks->as_array()) {
        const auto at = d.source().begin;
        if (!d.is_string()) {
            c.error(at, "disks of " + what + " must be strings like \"path=FILE\", not " + type_name(d));
            continue;
        }
        auto disk = vmm::parse_disk_flag(std::string(d.as_string()->get()));
        if (!disk) {
            c.error(at, "disk of " + what + ": " + disk.error().message());
            continue;
        }
        disk->path = c.resolve(disk->path).string();
        if (check_files) c.check_file_exists(at, "disk of " + what, disk->path, true);
        vm.machine.disks.push_back(std::move(disk).value());
    }
}

// False when the VM cannot be used (a bad or mistyped ip).
bool parse_vm_ip(Checker& c, const toml::table& t, const std::string& what, VmEntry& vm, VmPositions& pos)
{
    auto ip = c.get_string(t, "ip", what, false);
    if (!ip) return !t.get("ip");  // absent, or of the wrong type (reported)
    pos.ip = t.get("ip")->source().begin;
    std::string address;
    if (!parse_guest_ip(*ip, address)) {
        c.error(pos.ip, "ip '" + *ip + "' of " + what + " is not an IPv4 address with prefix length like 10.1.0.1/24");
        return false;
    }
    vm.ip = *ip;
    return true;
}

// Whether `vm` may run on the node it names: a known node that passed its
// own checks (a node rejected for another reason was reported already).
bool check_vm_node(Checker& c, const toml::table& t, const std::string& what, const ClusterConfig& cfg,
                   const NameIndex& node_names, VmEntry& vm)
{
    auto node = c.get_string(t, "node", what, true);
    if (!node) return false;
    vm.node = *node;
    if (!node_names.contains(*node)) {
        c.error(t.get("node")->source().begin, what + " is on unknown node '" + *node + "'");
        return false;
    }
    return cfg.node(*node) != nullptr;
}

bool parse_vm_port(Checker& c, const toml::table& t, const std::string& what, VmEntry& vm, VmPositions& pos)
{
    auto port = c.get_int(t, "port", what, true);
    if (!port) return false;
    pos.port = t.get("port")->source().begin;
    if (*port < 1 || *port > 65535) {
        c.error(pos.port, "port " + std::to_string(*port) + " of " + what + " is out of range (1..65535)");
        return false;
    }
    vm.port = static_cast<uint16_t>(*port);
    return true;
}

struct ParsedVm {
    VmEntry vm;
    VmPositions pos;
};

std::optional<ParsedVm> parse_vm(Checker& c, const toml::table& t, size_t index, const ClusterConfig& cfg,
                                 const NameIndex& node_names, NameIndex& vm_names, bool check_files)
{
    auto name = c.get_string(t, "name", element_what(std::nullopt, "vm", index), true);
    const std::string what = element_what(name, "vm", index);
    c.check_keys(t, what,
                 {"name", "node", "port", "cpus", "mem", "huge_pages", "kernel", "initrd", "cmdline", "mac", "disks", "ip"});
    ParsedVm p;
    VmEntry& vm = p.vm;
    p.pos.table = t.source().begin;
    auto at = [&](std::string_view key) { return t.get(key)->source().begin; };
    bool good = false;
    if (name) {
        vm.name = *name;
        p.pos.name = at("name");
        good = claim_name(c, t, "VM", *name, vm_names);
    }
    good &= check_vm_node(c, t, what, cfg, node_names, vm);
    good &= parse_vm_port(c, t, what, vm, p.pos);
    if (auto huge = c.get_bool(t, "huge_pages", what)) vm.machine.huge_pages = *huge;
    if (auto cpus = c.get_int(t, "cpus", what, false)) {
        if (*cpus < int64_t{vmm::kMinCpus} || *cpus > int64_t{vmm::kMaxCpus})
            c.error(at("cpus"), "cpus " + std::to_string(*cpus) + " of " + what + " is out of range (1.." +
                                    std::to_string(vmm::kMaxCpus) + ")");
        else
            vm.machine.cpus = static_cast<unsigned>(*cpus);
    }
    if (const toml::node* mem = t.get("mem"))
        if (auto bytes = parse_vm_mem(c, *mem, what)) vm.machine.mem_bytes = *bytes;
    if (auto kernel = c.get_path(t, "kernel", what, true)) {
        vm.machine.kernel = kernel->string();
        if (check_files) c.check_file_exists(at("kernel"), "kernel of " + what, *kernel, false);
    }
    if (auto initrd = c.get_path(t, "initrd", what, false)) {
        vm.machine.initrd = initrd->string();
        if (check_files) c.check_file_exists(at("initrd"), "initrd of " + what, *initrd, false);
    }
    if (auto cmdline = c.get_string(t, "cmdline", what, false)) {
        vm.machine.cmdline = *cmdline;
        check_vm_cmdline(c, at("cmdline"), *cmdline, what);
    }
    good &= parse_vm_mac(c, t, what, vm, p.pos);
    parse_vm_disks(c, t, what, check_files, vm, p.pos);
    good &= parse_vm_ip(c, t, what, vm, p.pos);
    return good ? std::optional<ParsedVm>(std::move(p)) : std::nullopt;
}

// The VMs that passed their own checks, and where each was written.
std::vector<VmPositions> parse_vms(Checker& c, const toml::table& root, ClusterConfig& cfg, const NameIndex& node_names,
                                   bool check_files)
{
    std::vector<VmPositions> positions;
    NameIndex vm_names;
    if (const toml::node* arr = array_of_tables(c, root, "vm")) {
        size_t index = 0;
        for (const toml::node& element : *arr->as_array()) {
            auto parsed = parse_vm(c, *element.as_table(), ++index, cfg, node_names, vm_names, check_files);
            if (!parsed) continue;
            cfg.vms.push_back(std::move(parsed->vm));
            positions.push_back(parsed->pos);
        }
    }
    if (!root.get("vm")) c.error({1, 1}, "no [[vm]] defined");
    return positions;
}

// ---- rules across VMs --------------------------------------------------------

void check_vms_together(Checker& c, const ClusterConfig& cfg, const std::vector<VmPositions>& positions)
{
    std::map<net::SocketAddress, size_t> listeners;
    std::map<net::MacAddress, size_t> macs;
    std::map<std::string, size_t> ips;
    size_t with_ip = 0;
    for (size_t i = 0; i < cfg.vms.size(); ++i) {
        const VmEntry& vm = cfg.vms[i];
        const VmPositions& pos = positions[i];
        const net::SocketAddress listen = cfg.listen_address(vm);
        if (auto [it, fresh] = listeners.emplace(listen, i); !fresh)
            c.error(pos.port, "port clash: VM '" + vm.name + "' and VM '" + cfg.vms[it->second].name + "' (at " +
                                  where(positions[it->second].port) + ") both listen on " + listen.to_string());
        if (auto [it, fresh] = macs.emplace(vm.mac, i); !fresh)
            c.error(pos.mac, "duplicate MAC " + vm.mac.to_string() + ": VM '" + vm.name + "' and VM '" +
                                 cfg.vms[it->second].name + "' (at " + where(positions[it->second].mac) + ")");
        // Parity covers a checkpoint's memory and state; a disk's layers would
        // be lost with the node, so such a VM could not be rebuilt.
        if (!vm.machine.disks.empty() && cfg.storage == CheckpointStorage::memory && cfg.redundancy.kind != Redundancy::Kind::none)
            c.error(pos.disks, "disks of VM '" + vm.name + "': redundancy \"" + cfg.redundancy.name() +
                                   "\" protects memory and device state, not disks (use storage = \"disk\", or "
                                   "redundancy = \"none\")");
        if (vm.ip) {
            ++with_ip;
            const std::string address = vm.ip->substr(0, vm.ip->find('/'));
            if (auto [it, fresh] = ips.emplace(address, i); !fresh)
                c.error(pos.ip, "duplicate guest ip " + address + ": VM '" + vm.name + "' and VM '" +
                                    cfg.vms[it->second].name + "' (at " + where(positions[it->second].ip) + ")");
        }
    }
    // The peer list in guest_cmdline() must name every other VM.
    if (with_ip != 0 && with_ip != cfg.vms.size()) {
        for (size_t i = 0; i < cfg.vms.size(); ++i)
            if (!cfg.vms[i].ip)
                c.error(positions[i].table, "[[vm]] '" + cfg.vms[i].name +
                                                "' has no 'ip' but other VMs do; give every VM an ip, or none");
    }
}

// What vvmm generates for each VM from the file: its command line and its
// network, checked with the rules the VMM applies to them.
void check_generated(Checker& c, const ClusterConfig& cfg, const std::vector<VmPositions>& positions)
{
    for (size_t i = 0; i < cfg.vms.size(); ++i) {
        const VmEntry& vm = cfg.vms[i];
        const size_t length = std::string(vmm::kDefaultCmdline).size() + 1 + cfg.guest_cmdline(vm).size();
        if (length > kMaxGuestCmdline)
            c.error(positions[i].table, "the kernel command line of VM '" + vm.name + "' would be " +
                                            std::to_string(length) + " bytes (at most " +
                                            std::to_string(kMaxGuestCmdline) + ")");
        // The same rules `--net` applies, so the lead's VMMs accept it.
        net::PeerNetSpec spec{vm.name, cfg.listen_address(vm), cfg.peers_of(vm), vm.mac, false};
        if (auto valid = net::validate_peer_net_spec(spec); !valid)
            c.error(positions[i].table, "network of VM '" + vm.name + "': " + valid.error().message());
    }
}

void check_cluster_files(Checker& c, const ClusterConfig& cfg, const ClusterPositions& pos)
{
    if (!cfg.secret_file.empty()) c.check_secret(pos.secret_file, cfg.secret_file);
    if (!cfg.checkpoint_dir.empty()) {
        std::error_code ec;
        if (fs::exists(cfg.checkpoint_dir, ec) && !fs::is_directory(cfg.checkpoint_dir, ec))
            c.error(pos.checkpoint_dir, "checkpoint_dir '" + cfg.checkpoint_dir.string() + "' exists and is not a directory");
    }
}

}  // namespace

Result<ClusterConfig> parse_cluster_config(std::string_view text, const fs::path& file, bool check_files)
{
    const fs::path absolute = fs::absolute(file).lexically_normal();
    Checker c(file.string(), absolute.parent_path());
    ClusterConfig cfg;
    cfg.file = absolute;
    const auto root = parse_toml(c, text, file);
    if (!root) return c.result();
    c.check_keys(*root, "the top level", {"cluster", "node", "vm"});

    ClusterPositions cluster_at;
    parse_cluster_table(c, *root, cfg, cluster_at);
    NameIndex node_names;
    parse_nodes(c, *root, cfg, node_names);
    const auto vm_at = parse_vms(c, *root, cfg, node_names, check_files);
    check_vms_together(c, cfg, vm_at);
    if (!c.failed()) check_generated(c, cfg, vm_at);
    if (!c.failed()) place_parity_for(c, cfg, cluster_at.policy);
    if (check_files) check_cluster_files(c, cfg, cluster_at);

    if (c.failed()) return c.result();
    return cfg;
}

Result<ClusterConfig> load_cluster_config(const fs::path& file, bool check_files)
{
    TRY_ASSIGN(auto text, read_small_file(file.string(), kMaxConfigBytes, "cluster config"));
    return parse_cluster_config(text, file, check_files);
}

}  // namespace vvmm::coord
