#include "runtime/vm_file_access.hpp"

#include <fcntl.h>

#include <filesystem>

#include "vmm/base/log.hpp"
#include "vmm/base/unique_fd.hpp"
#include "vmm/landlock.hpp"
#include "vmm/sandbox.hpp"

namespace vvmm::runtime {
namespace {

// Read by set-up or by libraries after set-up: host memory and CPU facts,
// OpenSSL's configuration (first TLS context), time zones (log lines).
const char* const kSystemReads[] = {"/proc", "/sys/devices/system/cpu", "/etc/ssl", "/usr/lib/ssl",
                                    "/etc/localtime", "/usr/share/zoneinfo", "/dev/urandom"};
// Opened during set-up or at a checkpoint: KVM, userfaultfd (cow checkpoints,
// lazy restore), and /dev/null.
const char* const kSystemDevices[] = {"/dev/kvm", "/dev/userfaultfd", "/dev/null"};

Result<void> create_console_file(const dev::ConsoleSpec& console)
{
    if (console.kind != dev::ConsoleSpec::Kind::file) return ok();
    UniqueFd fd(::open(console.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!fd.valid()) return errno_error("console: opening " + console.path);
    return ok();
}

std::string parent_dir(const std::string& path)
{
    const auto parent = std::filesystem::absolute(path).parent_path();
    return parent.empty() ? "/" : parent.string();
}

vmm::FileAccessRules rules_for(const VmFiles& f)
{
    vmm::FileAccessRules r;
    r.read.assign(std::begin(kSystemReads), std::end(kSystemReads));
    r.read_write.assign(std::begin(kSystemDevices), std::end(kSystemDevices));
    for (const auto& p : f.boot_files)
        if (!p.empty()) r.read.push_back(p);
    for (const auto& d : f.disks) (d.readonly ? r.read : r.read_write).push_back(d.path);
    for (const auto& p : f.checkpoint_reads) r.read.push_back(p);
    if (f.console.kind == dev::ConsoleSpec::Kind::file) r.write.push_back(f.console.path);
    if (!f.checkpoint_dir.empty()) r.full.push_back(f.checkpoint_dir);
    if (!f.persist_dir.empty()) r.full.push_back(f.persist_dir);
    if (!f.api_socket.empty()) r.socket_dirs.push_back(parent_dir(f.api_socket));
    return r;
}

}  // namespace

Result<void> confine_file_access(const VmFiles& files)
{
    // A launcher's --user made the kept capabilities ambient for the VMMs it
    // execs; a VMM execs nothing, and its threads inherit this.
    vmm::clear_ambient_capabilities();
    if (!vmm::sandbox_enabled()) return ok();
    TRY(create_console_file(files.console));
    for (const std::string& dir : {files.checkpoint_dir, files.persist_dir}) {
        if (dir.empty()) continue;
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        if (ec) return Error("cannot create checkpoint directory " + dir + ": " + ec.message());
    }
    TRY_ASSIGN(const std::string applied, vmm::restrict_file_access(rules_for(files)));
    if (applied.starts_with("landlock")) log_debug("sandbox: file system restricted (" + applied + ")");
    else log_warn("sandbox: the file system is not restricted: " + applied);
    return ok();
}

}  // namespace vvmm::runtime
