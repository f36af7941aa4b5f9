// vvmm: the only place that turns errors into exit statuses.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>

#include "cli/cluster_commands.hpp"
#include "cli/control_commands.hpp"
#include "cli/plan_command.hpp"
#include "cli/restore_command.hpp"
#include "cli/run_command.hpp"
#include "devices/raw_terminal.hpp"
#include "vmm/sandbox.hpp"

namespace {

// A crash must not leave the user's terminal in raw mode.
void install_crash_handlers()
{
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) {
        struct sigaction sa {};
        sa.sa_handler = [](int s) {
            vvmm::dev::restore_saved_terminal();
            signal(s, SIG_DFL);
            raise(s);
        };
        sa.sa_flags = SA_RESETHAND;
        sigaction(sig, &sa, nullptr);
    }
    signal(SIGPIPE, SIG_IGN);
}

bool has_subcommand(const CLI::App& app, const std::string& name)
{
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
        if (sub->get_name() == name) return true;
    return false;
}

}  // namespace

int main(int argc, char** argv)
{
    install_crash_handlers();
    CLI::App app{"vvmm: a small KVM virtual machine monitor with checkpoint/restart"};
    app.require_subcommand(1);
    bool no_sandbox = false;
    app.add_flag("--no-sandbox", no_sandbox,
                 "run VMMs without the sandbox (capabilities kept, no seccomp filter): for debugging only");
    std::string user;
    app.add_option("--user", user,
                   "run as this unprivileged account instead of root (started as root; the account needs /dev/kvm, "
                   "e.g. group kvm, and access to the VM's files and checkpoint directory)");
    app.failure_message([](const CLI::App*, const CLI::Error& e) { return std::string(e.what()) + "\n"; });
    // Each returns -1 unless its subcommand was the one parsed.
    const std::function<int()> commands[] = {
        vvmm::cli::add_run_command(app),
        vvmm::cli::add_restore_command(app),
        vvmm::cli::add_control_commands(app),
        vvmm::cli::add_list_command(app),
        vvmm::cli::add_plan_command(app),
    };
    if (argc > 1 && argv[1][0] != '-' && !has_subcommand(app, argv[1])) {
        std::fprintf(stderr, "vvmm: error: unknown command '%s' (try vvmm --help)\n", argv[1]);
        return 2;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::fprintf(stderr, "vvmm: error: %s\n", e.what());
        return 2;
    }
    vvmm::vmm::set_sandbox_enabled(!no_sandbox);
    // Before any thread exists (capabilities are per thread) and before any
    // file is opened (with --user, every open is checked as that account).
    if (!user.empty() || !no_sandbox) {
        auto dropped = user.empty() ? vvmm::vmm::drop_capabilities() : vvmm::vmm::become_user(user);
        if (!dropped) {
            std::fprintf(stderr, "vvmm: error: %s\n", dropped.error().message().c_str());
            return 1;
        }
    }
    try {
        for (const auto& command : commands)
            if (const int status = command(); status >= 0) return status;
    } catch (const std::exception& e) {
        // A last resort (e.g. a malformed JSON reply from a peer): one line,
        // not std::terminate's abort.
        std::fprintf(stderr, "vvmm: error: %s\n", e.what());
        return 1;
    }
    return 2;
}
