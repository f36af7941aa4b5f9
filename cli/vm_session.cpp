#include "cli/vm_session.hpp"

#include <sys/ioctl.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/checkpoint_loader.hpp"
#include "cli/vm_file_access.hpp"
#include "devices/raw_terminal.hpp"
#include "net/peer_mesh.hpp"
#include "vmm/sandbox.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/signal_watcher.hpp"
#include "vmm/base/time_text.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/linux_loader.hpp"

namespace vvmm::cli {
namespace {

// The key checkpoints are sealed with: a cluster's comes from its secret
// (every node can check every VM's), a single VM's from the user's key file.
std::function<Result<ckpt::SealKey>()> seal_key_source(const std::optional<ClusterRole>& cluster,
                                                        const std::string& key_file, bool create)
{
    if (cluster) {
        ckpt::SealKey key = ckpt::cluster_seal_key(cluster->secret, cluster->config.name);
        return [key] { return Result<ckpt::SealKey>(key); };
    }
    return [key_file, create]() -> Result<ckpt::SealKey> {
        std::string path = key_file;
        if (path.empty()) {
            TRY_ASSIGN(path, ckpt::default_key_path());
        }
        return ckpt::load_key_file(path, create);
    };
}

// With the sandbox, the key is read (or created) before the file system is
// restricted, not at the first checkpoint.
// `loaded`: the key restore already checked the checkpoint with, if any.
Result<std::function<Result<ckpt::SealKey>()>> seal_key_for_session(const std::optional<ClusterRole>& cluster,
                                                                    const std::string& key_file,
                                                                    const std::string& checkpoint_dir,
                                                                    const std::optional<ckpt::SealKey>& loaded = {})
{
    auto source = seal_key_source(cluster, key_file, true);
    if (cluster || checkpoint_dir.empty() || !vmm::sandbox_enabled()) return source;
    ckpt::SealKey key;
    if (loaded) {
        key = *loaded;
    } else {
        TRY_ASSIGN(key, source());
    }
    return std::function<Result<ckpt::SealKey>()>([key] { return Result<ckpt::SealKey>(key); });
}

Result<ckpt::SealPolicy> seal_policy(const RestoreRequest& req)
{
    ckpt::SealPolicy policy;
    policy.trust_unsigned = req.trust_unsigned;
    auto key = seal_key_source(req.cluster, req.checkpoint_key, false)();
    if (key) policy.key = std::move(key).value();
    else if (!req.trust_unsigned)
        return key.error().context("the key this VM's checkpoints were sealed with (--checkpoint-key; "
                                   "--trust-unsigned restores without it)");
    return policy;
}


std::string persist_dir_of(const std::optional<ClusterRole>& cluster)
{
    return cluster && cluster->config.persist_every ? cluster->config.persist_dir.string() : std::string();
}

// A cluster VM's interfaces may move (restore on other hosts), its MACs may not.
Result<void> check_same_macs(const std::vector<std::string>& recorded, const std::vector<std::string>& now)
{
    if (recorded.size() != now.size()) return Error("the VM had " + std::to_string(recorded.size()) + " network interface(s), the cluster now gives it " + std::to_string(now.size()));
    for (size_t i = 0; i < now.size(); ++i) {
        TRY_ASSIGN(auto a, net::parse_net_spec(recorded[i]));
        TRY_ASSIGN(auto b, net::parse_net_spec(now[i]));
        if (a.mac != b.mac) return Error("the VM's MAC was " + a.mac.to_string() + ", the cluster now says " + b.mac.to_string());
    }
    return ok();
}

nlohmann::json error_reply(const Error& e) { return {{"ok", false}, {"error", e.message()}}; }

}  // namespace

Result<std::vector<dev::NicConfig>> VmSession::nics(const std::vector<std::string>& specs)
{
    std::vector<dev::NicConfig> nics;
    for (const auto& n : specs) {
        const std::string backend = n.substr(0, n.find(','));
        if (backend != "peer") return Error("--net: unknown backend '" + backend + "' (expected peer,...)");
        auto spec = net::parse_net_spec(n);
        if (!spec) return spec.error().context("--net");
        net::MeshCluster cluster;
        if (cluster_)
            cluster = {cluster_->config.name, cluster_->secret,
                       cluster_->config.peer_names(*cluster_->config.vm(cluster_->vm))};
        auto mesh = net::PeerMesh::create(spec.value(), {}, cluster);
        if (!mesh) return mesh.error().context("--net");
        std::shared_ptr<net::PeerMesh> shared(std::move(mesh).value());
        // A cluster VM has one interface, on the cluster's mesh.
        if (cluster_ && !mesh_) mesh_ = shared;
        nics.push_back({spec->mac.bytes(), shared});
    }
    if (cluster_ && !mesh_) return Error("a cluster VM needs its network interface");
    return nics;
}

// The frames that were in flight towards this VM at the epoch's cut: they
// reach the guest before anything new.
Result<void> VmSession::load_channel_state(const std::string& dir, const ckpt::Manifest& m)
{
    if (!cluster_ || !cluster_->restore_epoch) return ok();
    if (!m.cluster || m.cluster->epoch != cluster_->restore_epoch)
        return Error(dir + " is not part of epoch " + std::to_string(cluster_->restore_epoch));
    constexpr uint64_t kMaxChannelState = 1ull << 30;
    TRY_ASSIGN(auto bytes, ckpt::read_verified(dir, m.cluster->channels, kMaxChannelState));
    TRY_ASSIGN(auto state, net::decode_channel_state(bytes));
    if (state.epoch != m.cluster->epoch) return Error(dir + "/channels.bin belongs to another epoch");
    mesh_->set_restore_backlog(state);
    log_info("restore: " + std::to_string(state.frame_count()) + " frame(s) in flight at the cut go to the guest first");
    return ok();
}

VmSession::~VmSession()
{
    // The watcher's thread may be inside request_exit: it stops before the
    // machine goes (signals stay blocked, so a late one is simply dropped).
    machine_for_signals_ = nullptr;
    signals_.reset();
    // The API and the cluster member call into the checkpointer: they go
    // first (the mesh's thread, which calls the member, stops before it);
    // the board's threads stop before the machine they point into.
    api_.reset();
    if (mesh_) mesh_->stop();
    member_.reset();
    checkpointer_.reset();
    board_.reset();
    lazy_.reset();
}

Result<void> VmSession::watch_signals()
{
    TRY_ASSIGN(signals_, SignalWatcher::start([this](int signo) {
        signal_ = signo;
        if (vmm::Machine* m = machine_for_signals_.load())
            m->request_exit({128 + signo, std::string("stopped by signal ") + strsignal(signo)});
    }));
    return ok();
}

Result<void> VmSession::build(const ckpt::VmShape& shape)
{
    shape_ = shape;
    TRY(vmm::check_host_can_back(shape.mem_bytes, vmm::host_ram_plus_swap()));
    TRY_ASSIGN(auto kvm, vmm::KvmSystem::open());
    kvm_ = std::make_unique<vmm::KvmSystem>(std::move(kvm));
    TRY_ASSIGN(machine_, vmm::Machine::create(*kvm_, shape.cpus, shape.mem_bytes, shape.huge_pages));
    machine_for_signals_ = machine_.get();
    return ok();
}

// The sections of a checkpoint, in restore order: in-kernel devices, vCPUs,
// then vvmm's devices (whose interrupts land in the restored irqchip).
Result<void> VmSession::collect_components()
{
    TRY_ASSIGN(auto msrs, kvm_->msr_index_list());
    vm_state_ = std::make_unique<vmm::VmState>(machine_->vm());
    components_.push_back(vm_state_.get());
    for (unsigned i = 0; i < machine_->cpu_count(); ++i) {
        vcpu_states_.push_back(std::make_unique<vmm::VcpuState>(machine_->vcpu(i), machine_->vm().fd(), msrs));
        components_.push_back(vcpu_states_.back().get());
    }
    for (auto* c : board_->snapshot_components()) components_.push_back(c);
    return ok();
}

Result<void> VmSession::start_services(const std::string& api_socket)
{
    ckpt::VmParts parts;
    parts.machine = machine_.get();
    parts.components = components_;
    dev::PcBoard* board = board_.get();
    parts.freeze_disks = [board](const std::string& dir) { return board->freeze_disks(dir); };
    parts.shape = shape_;
    parts.seal_key = seal_key_;
    parts.checkpoint_dir = checkpoint_dir_;
    parts.confined = vmm::sandbox_enabled();
    checkpointer_ = std::make_unique<ckpt::Checkpointer>(std::move(parts));
    if (!api_socket.empty()) {
        TRY_ASSIGN(api_, coord::ControlServer::create(api_socket, *this));
    }
    if (cluster_)
        member_ = std::make_unique<coord::ClusterMember>(
            cluster_->config, cluster_->vm, *mesh_, *checkpointer_,
            ckpt::cluster_seal_key(cluster_->secret, cluster_->config.name), [this] { return status(); },
            cluster_->restore_epoch);
    if (member_ && cluster_->rebuild) member_->set_rebuild_duty(*cluster_->rebuild);
    return ok();
}

Result<std::unique_ptr<VmSession>> VmSession::boot(const BootRequest& req)
{
    const auto& c = req.config;
    std::unique_ptr<VmSession> s(new VmSession());
    s->cluster_ = req.cluster;
    s->checkpoint_dir_ = req.cluster ? req.cluster->node_root() : req.checkpoint_dir;
    dev::BoardConfig board;
    TRY_ASSIGN(board.console, dev::parse_console_spec(c.console));
    for (const auto& d : req.disk_specs) {
        TRY_ASSIGN(auto spec, dev::parse_disk_spec(d));
        board.disks.push_back(std::move(spec));
    }
    TRY_ASSIGN(s->seal_key_, seal_key_for_session(req.cluster, req.checkpoint_key, s->checkpoint_dir_));
    // Before the first thread: landlock restricts the threads created after it.
    VmFiles files{{c.kernel}, board.disks, {}, board.console, s->checkpoint_dir_, req.api_socket, persist_dir_of(req.cluster)};
    if (c.initrd) files.boot_files.push_back(*c.initrd);
    TRY(confine_file_access(files));
    TRY(s->watch_signals());
    TRY(vmm::check_boot_files({c.kernel, c.initrd, c.full_cmdline()}, c.mem_bytes));
    TRY_ASSIGN(board.nics, s->nics(req.net_specs));
    ckpt::VmShape shape{c.cpus, c.mem_bytes, c.huge_pages, c.kernel, c.full_cmdline(), c.console, req.disk_specs, req.net_specs};
    TRY(s->build(shape));
    TRY(vmm::load_linux(*s->machine_, {c.kernel, c.initrd, c.full_cmdline()}));
    TRY_ASSIGN(s->board_, dev::PcBoard::create(*s->machine_, board));
    TRY(s->collect_components());
    TRY(s->start_services(req.api_socket));
    return s;
}

Result<std::unique_ptr<VmSession>> VmSession::restore(const RestoreRequest& req)
{
    const auto t0 = std::chrono::steady_clock::now();
    // Everything that can be checked before a VM exists is checked first.
    TRY_ASSIGN(auto policy, seal_policy(req));
    TRY_ASSIGN(auto loaded, ckpt::load_checkpoint(req.dir, policy));
    const ckpt::Manifest m = loaded.manifest;
    std::unique_ptr<VmSession> s(new VmSession());
    s->cluster_ = req.cluster;
    const std::string restored_root = std::filesystem::path(loaded.dir).parent_path().string();
    s->checkpoint_dir_ = !req.checkpoint_dir.empty() ? req.checkpoint_dir
                         : req.cluster              ? req.cluster->node_root()
                                                    : restored_root;
    dev::BoardConfig board;
    // Only a console the user names now: the checkpoint's own console path is
    // not trusted (a tampered manifest could make this root process append
    // guest output to any host file).
    TRY_ASSIGN(board.console, dev::parse_console_spec(req.console.empty() ? "stdio" : req.console));
    for (size_t i = 0; i < m.disks.size(); ++i) {
        dev::ChainDescription d;
        TRY_ASSIGN(d.base, dev::parse_disk_spec(m.vm.disks[i]));
        d.base.path = m.disks[i].base;
        d.size = m.disks[i].base_size;
        d.base_mtime_ns = m.disks[i].base_mtime_ns;
        for (const auto& name : m.disks[i].layers)
            d.layers.push_back({loaded.dir + "/" + name, loaded.dir + "/" + name + ".map"});
        board.restored_disks.push_back(std::move(d));
    }
    // The restored disks' new top layers go where this VM's checkpoints go.
    board.overlay_dir = (req.cluster ? restored_root : s->checkpoint_dir_) + "/.layers";
    std::vector<dev::DiskSpec> disk_bases;
    for (const auto& d : board.restored_disks) disk_bases.push_back({d.base.path, true, {}});
    TRY_ASSIGN(s->seal_key_, seal_key_for_session(req.cluster, req.checkpoint_key, s->checkpoint_dir_, policy.key));
    TRY(confine_file_access(
        {{}, disk_bases, {loaded.dir}, board.console, s->checkpoint_dir_, req.api_socket, persist_dir_of(req.cluster)}));
    TRY(s->watch_signals());
    if (!board.restored_disks.empty()) {
        std::error_code ec;
        std::filesystem::create_directories(board.overlay_dir, ec);
        if (ec) return Error("cannot create " + board.overlay_dir + ": " + ec.message());
    }
    ckpt::VmShape shape = m.vm;
    if (!req.net_specs.empty()) {
        TRY(check_same_macs(m.vm.nets, req.net_specs));
        shape.nets = req.net_specs;  // later checkpoints record where the VM is now
    }
    TRY_ASSIGN(board.nics, s->nics(shape.nets));
    TRY(s->load_channel_state(loaded.dir, m));
    TRY(s->build(shape));
    vmm::Machine* machine = s->machine_.get();
    // Guest memory is served from the checkpoint from now on.
    // A chunk that fails its check must never reach the guest, and a vCPU
    // may be blocked on it inside KVM: end the process at once.
    TRY_ASSIGN(s->lazy_, ckpt::LazyMemory::create(machine->memory(), std::move(loaded.chain), [](const Error& e) {
        log_error("restore: " + e.message());
        dev::restore_saved_terminal();
        std::_Exit(1);
    }));
    if (req.verify_full) TRY(s->lazy_->verify_all());
    s->lazy_->start();
    TRY_ASSIGN(s->board_, dev::PcBoard::create(*s->machine_, board));
    TRY(s->collect_components());
    s->vm_state_->set_clock_mode(req.clock);
    TRY(ckpt::restore_sections(loaded.sections, s->components_));
    // Tell the guest's kvmclock it was paused, so it does not report soft lockups.
    for (unsigned i = 0; i < machine->cpu_count(); ++i)
        if (::ioctl(machine->vcpu(i).fd(), KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
            return errno_error("KVM_KVMCLOCK_CTRL");
    TRY(s->start_services(req.api_socket));
    TRY(s->checkpointer_->adopt_parent(loaded.dir, m));
    s->restored_ = true;
    s->restore_ms_ = ms_since(t0);
    return s;
}

vmm::MachineExit VmSession::run()
{
    if (const int signo = signal_.load())
        return {128 + signo, std::string("stopped by signal ") + strsignal(signo)};
    // Set-up is done: from here the process only runs the guest (vmm/sandbox.hpp).
    if (vmm::sandbox_enabled())
        if (auto r = vmm::enter_sandbox(); !r) return {1, r.error().message()};
    if (auto r = board_->start(); !r) return {1, r.error().message()};
    // A restored VM's devices come back quiesced: let them take work now.
    if (restored_)
        for (auto* c : components_) c->unquiesce();
    if (restored_) log_debug("restored in " + std::to_string(restore_ms_) + " ms (memory loads lazily)");
    if (member_ && cluster_->restore_epoch) {
        auto r = member_->wait_restored(cluster_->restore_epoch, [this] { return signal_.load() != 0; });
        if (!r) return {signal_ ? 128 + signal_.load() : 1, r.error().message()};
    }
    return machine_->run();
}

nlohmann::json VmSession::status() const
{
    nlohmann::json j = {{"ok", true},
                        {"state", checkpointer_->paused() ? "paused" : "running"},
                        {"cpus", shape_.cpus},
                        {"mem_bytes", shape_.mem_bytes},
                        {"uptime_s", ms_since(created_) / 1000.0},
                        {"checkpoints", checkpointer_->count()}};
    if (restored_) j["restore_ms"] = restore_ms_;
    if (const uint64_t spoofed = board_->spoofed_tx_dropped()) j["spoofed_tx_dropped"] = spoofed;
    if (auto last = checkpointer_->last()) j["last_checkpoint"] = last->to_json();
    return j;
}

nlohmann::json VmSession::handle(const coord::ControlRequest& request)
{
    using coord::ControlCommand;
    switch (request.cmd) {
    case ControlCommand::status:
        return status();
    case ControlCommand::pause:
        if (auto r = checkpointer_->pause(); !r) return error_reply(r.error());
        return {{"ok", true}, {"state", "paused"}};
    case ControlCommand::resume:
        if (auto r = checkpointer_->resume(); !r) return error_reply(r.error());
        return {{"ok", true}, {"state", "running"}};
    case ControlCommand::stop:
        machine_->request_exit({0, "stopped through the control API"});
        return {{"ok", true}, {"state", "stopped"}};
    case ControlCommand::checkpoint: {
        auto r = checkpointer_->checkpoint({request.dir, request.mode, request.incremental});
        if (!r) return error_reply(r.error().context("checkpoint failed (the VM keeps running)"));
        return r->to_json();
    }
    }
    return error_reply(Error("unknown command"));
}

int run_session(VmSession& session)
{
    const vmm::MachineExit exit = session.run();
    // Being stopped by a signal is how a VM is normally ended, not an error.
    const bool by_signal = exit.status > 128 && session.stopped_by_signal();
    if (!exit.message.empty()) {
        if (exit.status == 0 || by_signal) log_info(exit.message);
        else log_error(exit.message);
    }
    return exit.status;
}

}  // namespace vvmm::cli
