// Running a VM session to its end, as the CLI reports it.
#pragma once

#include "runtime/vm_session.hpp"

namespace vvmm::cli {

// Runs the session, prints how the VM ended, returns the exit status.
int run_session(runtime::VmSession& session);

}  // namespace vvmm::cli
