#include "cli/run_command.hpp"

#include <csignal>
#include <memory>

#include "devices/pc_board.hpp"
#include "net/peer_mesh.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/signal_watcher.hpp"
#include "vmm/base/size_parse.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/linux_loader.hpp"
#include "vmm/machine.hpp"
#include "vmm/vm_config.hpp"

namespace vvmm::cli {
namespace {

struct RunFlags {
    vmm::VmConfig config;
    std::string mem_text = "512M";
    std::string initrd;
    std::vector<std::string> disks;
    std::vector<std::string> nets;
    bool verbose = false;
};

Result<dev::BoardConfig> board_config(const RunFlags& f, const vmm::VmConfig& c)
{
    dev::BoardConfig board;
    TRY_ASSIGN(board.console, dev::parse_console_spec(c.console));
    for (const auto& d : f.disks) {
        TRY_ASSIGN(auto spec, dev::parse_disk_spec(d));
        board.disks.push_back(std::move(spec));
    }
    for (const auto& n : f.nets) {
        const std::string backend = n.substr(0, n.find(','));
        if (backend != "peer") return Error("--net: unknown backend '" + backend + "' (expected peer,...)");
        auto spec = net::parse_net_spec(n);
        if (!spec) return spec.error().context("--net");
        auto mesh = net::PeerMesh::create(spec.value());
        if (!mesh) return mesh.error().context("--net");
        board.nics.push_back({spec->mac.bytes(), std::shared_ptr<net::NetBackend>(std::move(mesh).value())});
    }
    return board;
}

Result<vmm::VmConfig> resolve(const RunFlags& f)
{
    vmm::VmConfig c = f.config;
    auto mem = parse_size(f.mem_text);
    if (!mem) return mem.error().context("--mem");
    c.mem_bytes = mem.value();
    if (!f.initrd.empty()) c.initrd = f.initrd;
    TRY(vmm::validate_vm_config(c));
    return c;
}

// Everything that can fail before a VM exists is checked first, so a bad
// flag never leaves a half-started VM behind.
Result<vmm::MachineExit> run_vm(const vmm::VmConfig& c, const dev::BoardConfig& board_config)
{
    TRY(vmm::check_host_can_back(c.mem_bytes, vmm::host_ram_plus_swap()));
    TRY(vmm::check_kernel_file(c.kernel, c.mem_bytes));
    TRY_ASSIGN(auto kvm, vmm::KvmSystem::open());
    TRY_ASSIGN(auto machine, vmm::Machine::create(kvm, c.cpus, c.mem_bytes));
    TRY(vmm::load_linux(*machine, {c.kernel, c.initrd, c.full_cmdline()}));
    TRY_ASSIGN(auto board, dev::PcBoard::create(*machine, board_config));
    vmm::Machine* m = machine.get();
    TRY_ASSIGN(auto signals, SignalWatcher::start([m](int signo) {
        m->request_exit({128 + signo, std::string("stopped by signal ") + strsignal(signo)});
    }));
    TRY(board->start());
    return machine->run();
}

}  // namespace

std::function<int()> add_run_command(CLI::App& app)
{
    auto flags = std::make_shared<RunFlags>();
    CLI::App* run = app.add_subcommand("run", "Boot a VM from a Linux boot-protocol kernel");
    run->add_option("--kernel", flags->config.kernel, "bzImage or uncompressed ELF vmlinux")->required();
    run->add_option("--initrd", flags->initrd, "initial ramdisk");
    run->add_option("--cmdline", flags->config.cmdline_extra,
                    std::string("appended to the default command line: ") + vmm::kDefaultCmdline);
    run->add_option("--cpus", flags->config.cpus, "number of vCPUs (1..32)")->capture_default_str();
    run->add_option("--mem", flags->mem_text, "guest RAM, e.g. 256M or 2G")->capture_default_str();
    run->add_option("--console", flags->config.console, "stdio or file:PATH")->capture_default_str();
    run->add_option("--disk", flags->disks, "virtio-blk disk: path=FILE[,readonly=on][,id=SERIAL] (repeatable)");
    run->add_option("--net", flags->nets,
                    "virtio-net on the peer mesh: peer,id=NAME,listen=HOST:PORT,peers=HOST:PORT;...,mac=MAC (repeatable)");
    run->add_flag("-v,--verbose", flags->verbose, "log debug messages");
    return [run, flags]() -> int {
        if (!run->parsed()) return -1;
        if (flags->verbose) set_log_level(LogLevel::debug);
        auto config = resolve(*flags);
        if (!config) {
            log_error(config.error().message());
            return 1;
        }
        auto board = board_config(*flags, config.value());
        if (!board) {
            log_error(board.error().message());
            return 1;
        }
        auto exit = run_vm(config.value(), board.value());
        if (!exit) {
            log_error(exit.error().message());
            return 1;
        }
        if (!exit->message.empty()) {
            if (exit->status == 0) log_info(exit->message);
            else log_error(exit->message);
        }
        return exit->status;
    };
}

}  // namespace vvmm::cli
