#include "cli/run_command.hpp"

#include <memory>

#include "cli/cluster_commands.hpp"
#include "cli/session_exit.hpp"
#include "vmm/base/log.hpp"
#include "vmm/base/size_parse.hpp"
#include "net/net_spec.hpp"
#include "vmm/vm_description.hpp"

namespace vvmm::cli {
namespace {

struct RunFlags {
    vmm::VmDescription config;
    std::string cmdline;
    std::string mem_text = "512M";
    std::string initrd;
    std::vector<std::string> disks;
    std::vector<std::string> nets;
    std::string api;
    std::string checkpoint_key;
    std::string checkpoint_dir;
    bool verbose = false;
    ClusterFlags cluster;
};

// The flags as one description of the VM, every part checked.
Result<vmm::VmDescription> resolve(const RunFlags& f)
{
    vmm::VmDescription c = f.config;
    auto mem = parse_size(f.mem_text);
    if (!mem) return mem.error().context("--mem");
    c.mem_bytes = mem.value();
    if (!f.initrd.empty()) c.initrd = f.initrd;
    c.cmdline = vmm::cmdline_with_default(f.cmdline);
    TRY(vmm::validate_vm_description(c));
    for (const auto& d : f.disks) {
        TRY_ASSIGN(auto disk, vmm::parse_disk_flag(d));
        c.disks.push_back(std::move(disk));
    }
    for (const auto& n : f.nets) {
        // Checked whole here, so a mistake is named before anything starts.
        auto spec = net::parse_net_spec(n);
        if (!spec) return spec.error().context("--net");
        c.nics.push_back(net::nic_description(spec.value()));
    }
    return c;
}

}  // namespace

std::function<int()> add_run_command(CLI::App& app)
{
    auto flags = std::make_shared<RunFlags>();
    CLI::App* run = app.add_subcommand("run", "Boot a VM from a Linux boot-protocol kernel");
    // The options that describe the VM: with --cluster, the cluster file does.
    const std::vector<const CLI::Option*> vm_options = {
        run->add_option("--kernel", flags->config.kernel, "bzImage or uncompressed ELF vmlinux (required without --cluster)"),
        run->add_option("--initrd", flags->initrd, "initial ramdisk"),
        run->add_option("--cmdline", flags->cmdline,
                        std::string("appended to the default command line: ") + vmm::kDefaultCmdline),
        run->add_option("--cpus", flags->config.cpus, "number of vCPUs (1..32)")->capture_default_str(),
        run->add_option("--mem", flags->mem_text, "guest RAM, e.g. 256M or 2G")->capture_default_str(),
        run->add_option("--console", flags->config.console, "stdio or file:PATH")->capture_default_str(),
        run->add_option("--disk", flags->disks, "virtio-blk disk: path=FILE[,readonly=on][,id=SERIAL] (repeatable)"),
        run->add_option("--net", flags->nets,
                        "virtio-net on the peer mesh: peer,id=NAME,listen=HOST:PORT,peers=HOST:PORT;...,mac=MAC (repeatable)"),
        run->add_flag("--huge-pages", flags->config.huge_pages,
                      "back guest RAM with 2 MiB huge pages (reserve them in /proc/sys/vm/nr_hugepages); makes copy-on-write checkpoints pause far shorter"),
        run->add_option("--checkpoint-dir", flags->checkpoint_dir,
                        "where checkpoints go (`vvmm checkpoint` without --dir; subdirectories with --dir): the only "
                        "directory the VMM's sandbox lets it write, so without it a sandboxed VM cannot be checkpointed"),
        run->add_option("--checkpoint-key", flags->checkpoint_key,
                        "key file that seals this VM's checkpoints (default: ~/.config/vvmm/checkpoint.key, created if missing; "
                        "a cluster's come from its secret)"),
    };
    run->add_option("--api", flags->api, "control API socket (status, pause, resume, checkpoint, stop)");
    run->add_flag("-v,--verbose", flags->verbose, "log debug messages");
    add_cluster_options(run, flags->cluster, false);
    return [run, flags, vm_options]() -> int {
        if (!run->parsed()) return -1;
        if (flags->verbose) set_log_level(LogLevel::debug);
        flags->cluster.verbose = flags->verbose;
        if (!flags->cluster.file.empty()) {
            if (const std::string flag = given_flag(vm_options); !flag.empty()) {
                log_error("--cluster: the VMs come from the cluster file; " + flag + " does not apply");
                return 2;
            }
            return run_cluster(flags->cluster, flags->api);
        }
        if (!flags->cluster.node.empty() || !flags->cluster.vm.empty()) {
            log_error("--node and --vm go with --cluster");
            return 2;
        }
        if (flags->config.kernel.empty()) {
            log_error("--kernel is required (or --cluster FILE)");
            return 2;
        }
        auto config = resolve(*flags);
        if (!config) {
            log_error(config.error().message());
            return 1;
        }
        auto session = runtime::VmSession::boot(
            {config.value(), flags->api, {}, flags->checkpoint_key, flags->checkpoint_dir});
        if (!session) {
            log_error(session.error().message());
            return 1;
        }
        return run_session(**session);
    };
}

}  // namespace vvmm::cli
