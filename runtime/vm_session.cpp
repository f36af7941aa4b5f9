#include "runtime/vm_session.hpp"

#include <cstring>

#include "net/peer_mesh.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/signal_watcher.hpp"
#include "vmm/base/time_text.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/sandbox.hpp"

namespace vvmm::runtime {
namespace {

nlohmann::json error_reply(const Error& e) { return {{"ok", false}, {"error", e.message()}}; }

}  // namespace

Result<std::vector<dev::NicConfig>> VmSession::nics(const std::vector<vmm::NicDescription>& described)
{
    std::vector<dev::NicConfig> nics;
    for (const auto& n : described) {
        auto spec = net::peer_net_spec(n);
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

Result<void> VmSession::build(const vmm::VmDescription& vm)
{
    vm_ = vm;
    TRY(vmm::check_host_can_back(vm.mem_bytes, vmm::host_ram_plus_swap()));
    TRY_ASSIGN(auto kvm, vmm::KvmSystem::open());
    kvm_ = std::make_unique<vmm::KvmSystem>(std::move(kvm));
    TRY_ASSIGN(machine_, vmm::Machine::create(*kvm_, vm.cpus, vm.mem_bytes, vm.huge_pages));
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
    parts.vm = vm_;
    parts.seal_key = seal_key_;
    parts.checkpoint_dir = checkpoint_dir_;
    parts.confined = vmm::sandbox_enabled();
    parts.wait_memory_loaded = [this] {
        if (lazy_) lazy_->wait_complete();
    };
    checkpointer_ = std::make_unique<ckpt::Checkpointer>(std::move(parts));
    if (!api_socket.empty()) {
        TRY_ASSIGN(api_, control::ControlServer::create(api_socket, *this));
    }
    if (cluster_)
        member_ = std::make_unique<coord::ClusterMember>(
            cluster_->config, cluster_->vm, *mesh_, *checkpointer_,
            ckpt::cluster_seal_key(cluster_->secret, cluster_->config.name), [this] { return status(); },
            cluster_->restore_epoch);
    if (member_ && cluster_->rebuild) member_->set_rebuild_duty(*cluster_->rebuild);
    return ok();
}

vmm::MachineExit VmSession::run()
{
    if (const int signo = signal_.load())
        return {128 + signo, std::string("stopped by signal ") + strsignal(signo)};
    // Set-up is done: from here the process only runs the guest (vmm/sandbox.hpp).
    if (vmm::sandbox_enabled())
        if (auto r = vmm::enter_sandbox(); !r) return {1, r.error().message()};
    if (auto r = board_->start(); !r) return {1, r.error().message()};
    if (restored_) log_debug("restored in " + std::to_string(restore_ms_) + " ms (memory loads lazily)");
    if (member_ && cluster_->restore_epoch) {
        auto r = member_->wait_restored(cluster_->restore_epoch, [this] { return signal_.load() != 0; });
        if (!r) return {signal_ ? 128 + signal_.load() : 1, r.error().message()};
    }
    // A restored VM's devices come back quiesced and take work only now,
    // after the cluster's barrier: a TX frame held at the cut would otherwise
    // go out to a VM still being rebuilt from parity, whose stand-in mesh
    // cannot deliver it (and stops reading that peer, stalling its rebuild data).
    if (restored_)
        for (auto* c : components_) c->unquiesce();
    return machine_->run();
}

nlohmann::json VmSession::status() const
{
    nlohmann::json j = {{"ok", true},
                        {"state", checkpointer_->paused() ? "paused" : "running"},
                        {"cpus", vm_.cpus},
                        {"mem_bytes", vm_.mem_bytes},
                        {"uptime_s", ms_since(created_) / 1000.0},
                        {"checkpoints", checkpointer_->count()}};
    if (restored_) j["restore_ms"] = restore_ms_;
    if (const uint64_t spoofed = board_->spoofed_tx_dropped()) j["spoofed_tx_dropped"] = spoofed;
    if (auto last = checkpointer_->last()) j["last_checkpoint"] = last->to_json();
    return j;
}

nlohmann::json VmSession::handle(const control::ControlRequest& request)
{
    using control::ControlCommand;
    switch (request.cmd) {
    case ControlCommand::status: {
        // Device detail only here, not in a cluster's `list` (one line per VM).
        nlohmann::json j = status();
        j.update(board_->report());
        return j;
    }
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

}  // namespace vvmm::runtime
