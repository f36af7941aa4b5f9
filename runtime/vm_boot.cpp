// Building a VM by booting a kernel: the board from the description's devices, the
// kernel loaded into fresh memory. (Restoring one: vm_restore.cpp.)
#include "runtime/vm_session.hpp"

#include "runtime/seal_keys.hpp"
#include "runtime/vm_file_access.hpp"
#include "vmm/linux_loader.hpp"

namespace vvmm::runtime {

Result<std::unique_ptr<VmSession>> VmSession::boot(const BootRequest& req)
{
    const vmm::VmDescription& c = req.vm;
    std::unique_ptr<VmSession> s(new VmSession());
    s->cluster_ = req.cluster;
    s->checkpoint_dir_ = req.cluster ? req.cluster->node_root() : req.checkpoint_dir;
    dev::BoardConfig board;
    TRY_ASSIGN(board.console, dev::parse_console_spec(c.console));
    board.disks = c.disks;
    TRY_ASSIGN(s->seal_key_, seal_key_for_session(req.cluster, req.checkpoint_key, s->checkpoint_dir_));
    // Before the first thread: landlock restricts the threads created after it.
    VmFiles files{{c.kernel}, board.disks, {}, board.console, s->checkpoint_dir_, req.api_socket, s->persist_dir()};
    if (c.initrd) files.boot_files.push_back(*c.initrd);
    TRY(confine_file_access(files));
    TRY(s->watch_signals());
    TRY(vmm::check_boot_files({c.kernel, c.initrd, c.cmdline}, c.mem_bytes));
    TRY_ASSIGN(board.nics, s->nics(c.nics));
    TRY(s->build(c));
    TRY(vmm::load_linux(*s->machine_, {c.kernel, c.initrd, c.cmdline}));
    TRY_ASSIGN(s->board_, dev::PcBoard::create(*s->machine_, board));
    TRY(s->collect_components());
    TRY(s->start_services(req.api_socket));
    return s;
}

}  // namespace vvmm::runtime
