#include "vmm/landlock.hpp"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "vmm/base/unique_fd.hpp"

namespace vvmm::vmm {
namespace {

constexpr uint64_t kRead = LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kWriteFile = LANDLOCK_ACCESS_FS_WRITE_FILE;
constexpr uint64_t kAbi1 = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1;  // EXECUTE .. MAKE_SYM
constexpr uint64_t kRefer = uint64_t{1} << 13;                     // LANDLOCK_ACCESS_FS_REFER, ABI 2
constexpr uint64_t kTruncate = uint64_t{1} << 14;                  // LANDLOCK_ACCESS_FS_TRUNCATE, ABI 3
// Checkpoint directories: everything but execute and device nodes, fifos and symlinks.
constexpr uint64_t kFull = kRead | kWriteFile | LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
                           LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | kRefer | kTruncate;
constexpr uint64_t kSocketDir = LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_REMOVE_FILE;

int landlock_abi()
{
    return static_cast<int>(::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION));
}

uint64_t handled_by(int abi)
{
    uint64_t rights = kAbi1;
    if (abi >= 2) rights |= kRefer;
    if (abi >= 3) rights |= kTruncate;
    return rights;
}

// Rights that only mean something on a directory are not allowed on a file.
constexpr uint64_t kFileRights = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
                                 LANDLOCK_ACCESS_FS_READ_FILE | kTruncate;

Result<void> add_rule(int ruleset, const std::string& path, uint64_t rights, uint64_t handled)
{
    UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
    if (!fd.valid()) {
        if (errno == ENOENT) return ok();
        return errno_error("sandbox: landlock rule for " + path);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return errno_error("sandbox: landlock rule for " + path);
    if (!S_ISDIR(st.st_mode)) rights &= kFileRights;
    landlock_path_beneath_attr attr{};
    attr.allowed_access = rights & handled;
    attr.parent_fd = fd.get();
    if (attr.allowed_access == 0) return ok();
    if (::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0) != 0)
        return errno_error("sandbox: landlock rule for " + path);
    return ok();
}

}  // namespace

Result<std::string> restrict_file_access(const FileAccessRules& rules)
{
    const int abi = landlock_abi();
    if (abi < 0) {
        if (errno == ENOSYS || errno == EOPNOTSUPP)
            return std::string("no landlock in this kernel (") + (errno == ENOSYS ? "not built in" : "not enabled at boot") + ")";
        return errno_error("sandbox: landlock");
    }
    const uint64_t handled = handled_by(abi);
    landlock_ruleset_attr attr{};
    attr.handled_access_fs = handled;
    UniqueFd ruleset(static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, sizeof attr, 0)));
    if (!ruleset.valid()) return errno_error("sandbox: landlock_create_ruleset");
    for (const auto& p : rules.read) TRY(add_rule(ruleset.get(), p, kRead, handled));
    for (const auto& p : rules.read_write) TRY(add_rule(ruleset.get(), p, kRead | kWriteFile | kTruncate, handled));
    for (const auto& p : rules.write) TRY(add_rule(ruleset.get(), p, kWriteFile, handled));
    for (const auto& p : rules.full) TRY(add_rule(ruleset.get(), p, kFull, handled));
    for (const auto& p : rules.socket_dirs) TRY(add_rule(ruleset.get(), p, kSocketDir, handled));
    // landlock_restrict_self needs no_new_privs (or CAP_SYS_ADMIN, which is gone).
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return errno_error("sandbox: PR_SET_NO_NEW_PRIVS");
    if (::syscall(SYS_landlock_restrict_self, ruleset.get(), 0) != 0) return errno_error("sandbox: landlock_restrict_self");
    return "landlock ABI " + std::to_string(abi);
}

}  // namespace vvmm::vmm
