#include "cli/session_exit.hpp"

#include "vmm/base/log.hpp"

namespace vvmm::cli {

int run_session(runtime::VmSession& session)
{
    const vmm::MachineExit exit = session.run();
    // Being stopped by a signal is how a VM is normally ended, not an error.
    const bool by_signal = exit.status > 128 && session.stopped_by_signal();
    if (!exit.message.empty()) {
        if (exit.status == 0 || by_signal) log_info(exit.message);
        else log_error(exit.message);
    }
    return exit.status;
}

}  // namespace vvmm::cli
