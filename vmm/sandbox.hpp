// The VMM process's sandbox: what a guest that breaks out of its device
// emulation into vvmm's process can still do. In two steps:
//
//  1. drop_capabilities(), first thing in main, before any thread exists
//     (capabilities are per thread): every capability goes from every set and
//     the bounding set, except CAP_SYS_PTRACE, which userfaultfd(2) needs for
//     faults KVM raises on a guest's behalf (cow checkpoints, lazy restore;
//     vm.unprivileged_userfaultfd=0 on Debian), and CAP_IPC_LOCK, which lets
//     io_uring pin its buffers. Root then still owns the files it owns, and no
//     more: no CAP_DAC_OVERRIDE, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_SYS_MODULE...
//  2. enter_sandbox(), once the VM is set up and before the guest runs:
//     no_new_privs, then a seccomp allow-list (libseccomp) on every thread at
//     once (TSYNC): the system calls vvmm's threads make, with clone limited
//     to new threads; anything else (execve, ptrace, process_vm_*, mount,
//     bpf, module loading, new namespaces...) fails with EPERM. ptrace and
//     process_vm_* are refused, so the capability kept in step 1 cannot be
//     used on another process.
//
// The file system is restricted separately, and earlier (landlock.hpp): it
// must happen before the first thread. Not covered: operations submitted
// through io_uring are not seen by seccomp (the rings vvmm sets up only read
// and write files it opened itself).
#pragma once

#include <cstdint>
#include <string>

#include "vmm/base/result.hpp"

namespace vvmm::vmm {

// On by default; `vvmm --no-sandbox ...` turns both steps off (debugging).
void set_sandbox_enabled(bool enabled);
bool sandbox_enabled();

// The capabilities step 1 keeps, as a CapEff/CapPrm mask (/proc/PID/status).
uint64_t sandbox_kept_capabilities();

Result<void> drop_capabilities();
Result<void> enter_sandbox();

// `vvmm --user NAME`, called by a root vvmm instead of drop_capabilities():
// step 1 done as the account NAME (its uid, primary group and supplementary
// groups, e.g. `kvm` for /dev/kvm), so from then on every file vvmm opens is
// checked against NAME's permissions, and it keeps only the two capabilities
// above. They are made ambient too, so that VMMs a launcher starts (`vvmm run
// --cluster` for a node) run as NAME with them; each VMM's own
// drop_capabilities() then clears the ambient set. HOME becomes NAME's (the
// default checkpoint key is NAME's). NAME may not be root.
Result<void> become_user(const std::string& name);
// Empties the calling thread's ambient set (threads created later inherit it).
void clear_ambient_capabilities();

}  // namespace vvmm::vmm
