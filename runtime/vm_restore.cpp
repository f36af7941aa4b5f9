// Building a VM from a checkpoint: everything that can be checked is checked
// before the VM exists; memory is then served lazily from the checkpoint, the
// devices' and vCPUs' state restored. (Booting one: vm_boot.cpp.)
#include "runtime/vm_session.hpp"

#include <cstdlib>
#include <filesystem>

#include "ckpt/checkpoint_dir.hpp"
#include "ckpt/checkpoint_loader.hpp"
#include "ckpt/disk_chains.hpp"
#include "devices/raw_terminal.hpp"
#include "runtime/seal_keys.hpp"
#include "runtime/vm_file_access.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/time_text.hpp"

namespace vvmm::runtime {
namespace {

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

// A cluster VM's interfaces may move (restore on other hosts), its MACs may not.
Result<void> check_same_macs(const std::vector<vmm::NicDescription>& recorded, const std::vector<vmm::NicDescription>& now)
{
    if (recorded.size() != now.size()) return Error("the VM had " + std::to_string(recorded.size()) + " network interface(s), the cluster now gives it " + std::to_string(now.size()));
    for (size_t i = 0; i < now.size(); ++i) {
        TRY_ASSIGN(auto a, net::peer_net_spec(recorded[i]));
        TRY_ASSIGN(auto b, net::peer_net_spec(now[i]));
        if (a.mac != b.mac) return Error("the VM's MAC was " + a.mac.to_string() + ", the cluster now says " + b.mac.to_string());
    }
    return ok();
}

// The board a restored VM gets before its network: the console the user
// names now (the checkpoint's own console path is not trusted: a tampered
// manifest could make this root process append guest output to any host
// file), and the checkpoint's disk chains with new top layers in `overlay_dir`.
Result<dev::BoardConfig> restored_board(const RestoreRequest& req, const ckpt::LoadedCheckpoint& loaded,
                                        const std::string& overlay_dir)
{
    dev::BoardConfig board;
    TRY_ASSIGN(board.console, dev::parse_console_spec(req.console.empty() ? "stdio" : req.console));
    TRY_ASSIGN(board.restored_disks, ckpt::restored_disk_chains(loaded.manifest, loaded.dir));
    board.overlay_dir = overlay_dir;
    return board;
}

// The VM as recorded, on the network the cluster gives it now (if it says).
Result<vmm::VmDescription> vm_now(const vmm::VmDescription& recorded, const std::vector<vmm::NicDescription>& nics)
{
    vmm::VmDescription vm = recorded;
    if (!nics.empty()) {
        TRY(check_same_macs(recorded.nics, nics));
        vm.nics = nics;  // later checkpoints record where the VM is now
    }
    return vm;
}

Result<void> make_dir(const std::string& dir)
{
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Error("cannot create " + dir + ": " + ec.message());
    return ok();
}

}  // namespace

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
    // The restored disks' new top layers go where this VM's checkpoints go.
    const std::string overlay_dir = (req.cluster ? restored_root : s->checkpoint_dir_) + "/.layers";
    TRY_ASSIGN(dev::BoardConfig board, restored_board(req, loaded, overlay_dir));
    TRY_ASSIGN(s->seal_key_, seal_key_for_session(req.cluster, req.checkpoint_key, s->checkpoint_dir_, policy.key));
    std::vector<dev::DiskSpec> disk_bases;
    for (const auto& d : board.restored_disks) disk_bases.push_back({d.base.path, true, {}});
    TRY(confine_file_access(
        {{}, disk_bases, {loaded.dir}, board.console, s->checkpoint_dir_, req.api_socket, s->persist_dir()}));
    TRY(s->watch_signals());
    if (!board.restored_disks.empty()) TRY(make_dir(board.overlay_dir));
    TRY_ASSIGN(vmm::VmDescription vm, vm_now(m.vm, req.nics));
    TRY_ASSIGN(board.nics, s->nics(vm.nics));
    TRY(s->load_channel_state(loaded.dir, m));
    TRY(s->build(vm));
    TRY(s->serve_memory(std::move(loaded.chain), req.verify_full));
    TRY_ASSIGN(s->board_, dev::PcBoard::create(*s->machine_, board));
    TRY(s->collect_components());
    TRY(s->restore_sections(loaded.sections, req.clock));
    TRY(s->start_services(req.api_socket));
    TRY(s->checkpointer_->adopt_parent(loaded.dir, m));
    s->restored_ = true;
    s->restore_ms_ = ms_since(t0);
    return s;
}

// Guest memory is served from the checkpoint from now on. A chunk that fails
// its check must never reach the guest, and a vCPU may be blocked on it inside
// KVM: the process ends at once.
Result<void> VmSession::serve_memory(std::vector<ckpt::ChainLink> chain, bool verify_full)
{
    TRY_ASSIGN(lazy_, ckpt::LazyMemory::create(machine_->memory(), std::move(chain), [](const Error& e) {
        log_error("restore: " + e.message());
        dev::restore_saved_terminal();
        std::_Exit(1);
    }));
    if (verify_full) TRY(lazy_->verify_all());
    lazy_->start();
    return ok();
}

Result<void> VmSession::restore_sections(const std::vector<ckpt::Section>& sections, vmm::ClockMode clock)
{
    vm_state_->set_clock_mode(clock);
    TRY(ckpt::restore_sections(sections, components_));
    // Tell the guest's kvmclock it was paused, so it does not report soft lockups.
    for (unsigned i = 0; i < machine_->cpu_count(); ++i) TRY(machine_->vcpu(i).note_paused());
    return ok();
}

}  // namespace vvmm::runtime
