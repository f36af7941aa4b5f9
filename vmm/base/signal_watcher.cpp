#include "vmm/base/signal_watcher.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>

#include <memory>

namespace vvmm {

Result<std::unique_ptr<SignalWatcher>> SignalWatcher::start(std::function<void(int)> on_signal)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) return Error("cannot block signals");
    std::unique_ptr<SignalWatcher> w(new SignalWatcher());
    w->signal_fd_ = UniqueFd(::signalfd(-1, &set, SFD_CLOEXEC));
    if (!w->signal_fd_.valid()) return errno_error("signalfd");
    w->stop_fd_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!w->stop_fd_.valid()) return errno_error("eventfd");
    w->thread_ = std::thread([sfd = w->signal_fd_.get(), stop = w->stop_fd_.get(), cb = std::move(on_signal)] {
        for (;;) {
            pollfd fds[2] = {{sfd, POLLIN, 0}, {stop, POLLIN, 0}};
            if (::poll(fds, 2, -1) < 0) continue;
            if (fds[1].revents) return;
            signalfd_siginfo info{};
            if (::read(sfd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) cb(static_cast<int>(info.ssi_signo));
        }
    });
    return w;
}

SignalWatcher::~SignalWatcher()
{
    const uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(stop_fd_.get(), &one, sizeof one);
    if (thread_.joinable()) thread_.join();
}

}  // namespace vvmm
