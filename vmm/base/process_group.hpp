// The supervisor behind `vvmm run --cluster`: one VMM process per VM, their
// output merged line by line with a name prefix, stop signals forwarded, and
// every exit reported.
#pragma once

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm {

struct ChildSpec {
    std::string name;               // the output prefix; non-empty, printable, unique
    std::vector<std::string> argv;  // argv[0] is an absolute path (no PATH search)
};

struct ProcessGroupOptions {
    std::FILE* out = stdout;  // children's stdout lines, "<name>| <line>"
    std::FILE* err = stderr;  // children's stderr lines (same prefix) and our own reports: exits, "stopping all VMs"
    int stop_signal = SIGTERM;
    // After a stop request, children still running this long later get SIGKILL.
    std::chrono::milliseconds kill_after{10000};
    // Optional: when this fd becomes readable or hung up, it counts as one
    // SIGTERM received (a programmatic stop; not read, only polled, and
    // watched once). -1: none.
    int stop_fd = -1;
    // A child that fails (non-zero exit, killed) while no stop was requested
    // stops all the others, as a stop request would: for children that
    // cannot go on without each other (a restore waits for every VM).
    bool stop_all_on_failure = false;
};

// Starts every child (fork + execv, stdin from /dev/null, each in its own
// process group so a terminal's Ctrl-C reaches only us) and supervises them
// until all have ended. SIGINT/SIGTERM/SIGHUP received meanwhile are forwarded
// once to every live child's process group as stop_signal; a second one sends
// SIGKILL. Returns 0 if every child exited with 0 or ended by our stop
// request (exit 0, or death by stop_signal), else 1. Errors: invalid specs
// (nothing started), or a failure while starting (children started so far
// are killed and reaped).
//
// Blocks SIGINT/SIGTERM/SIGHUP/SIGCHLD in the calling thread while it runs
// (the mask is restored on return). Call it from the main thread before other
// threads exist, or with those signals blocked in every thread, and not while
// a SignalWatcher is active (both would read the same signals). Children are
// reaped by pid only, so other children of the caller are left alone.
Result<int> run_process_group(std::span<const ChildSpec> children, const ProcessGroupOptions& options = {});

}  // namespace vvmm
