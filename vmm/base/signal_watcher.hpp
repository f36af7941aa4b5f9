// Turns SIGINT/SIGTERM/SIGHUP into a callback on a thread of its own, so a
// signal ends the VM through the normal path (terminal restored, exit status).
#pragma once

#include <functional>
#include <thread>

#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm {

class SignalWatcher {
public:
    // Blocks the signals in the calling thread (and so in every thread it
    // creates later): call before starting other threads.
    static Result<std::unique_ptr<SignalWatcher>> start(std::function<void(int signo)> on_signal);
    ~SignalWatcher();

private:
    SignalWatcher() = default;
    UniqueFd signal_fd_;
    UniqueFd stop_fd_;
    std::thread thread_;
};

}  // namespace vvmm
