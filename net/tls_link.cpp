#include "net/tls_link.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <climits>

#include <openssl/err.h>

namespace vvmm::net {
namespace {

int remaining_ms(TlsLink::Clock::time_point deadline)
{
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - TlsLink::Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, INT_MAX));
}

// OpenSSL writes with write(2): a connection the other end closed raises
// SIGPIPE, which would kill a CLI. Blocked for the call on this thread, and
// one it raised is consumed (one that was pending before is left alone).
class SigpipeBlock {
public:
    SigpipeBlock()
    {
        sigemptyset(&pipe_);
        sigaddset(&pipe_, SIGPIPE);
        sigset_t pending;
        sigpending(&pending);
        was_pending_ = sigismember(&pending, SIGPIPE) == 1;
        pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
    }
    ~SigpipeBlock()
    {
        if (!was_pending_) {
            const timespec none{0, 0};
            while (sigtimedwait(&pipe_, nullptr, &none) == SIGPIPE) {}
        }
        pthread_sigmask(SIG_SETMASK, &old_, nullptr);
    }
    SigpipeBlock(const SigpipeBlock&) = delete;
    SigpipeBlock& operator=(const SigpipeBlock&) = delete;

private:
    sigset_t pipe_;
    sigset_t old_;
    bool was_pending_ = false;
};

}  // namespace

Result<TlsLink> TlsLink::handshake(UniqueFd fd, SSL_CTX* ctx, Side side, Clock::time_point deadline, std::string who)
{
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) return errno_error("fcntl");
    ERR_clear_error();
    const SigpipeBlock no_sigpipe;  // the handshake writes too
    UniqueSsl ssl(SSL_new(ctx));
    if (!ssl || SSL_set_fd(ssl.get(), fd.get()) != 1) return Error("cannot set up TLS: " + last_tls_error());
    TlsLink link(std::move(fd), std::move(ssl), std::move(who));
    for (;;) {
        const int rc = side == Side::client ? SSL_connect(link.ssl_.get()) : SSL_accept(link.ssl_.get());
        if (rc == 1) return link;
        TRY_ASSIGN(bool retry, link.wait_for_retry(rc, deadline, "in the TLS handshake"));
        if (!retry)
            return Error(link.who_ + " closed the connection in the TLS handshake (wrong cluster secret or name?)");
    }
}

Result<bool> TlsLink::wait_for_retry(int rc, Clock::time_point deadline, const char* doing)
{
    const int err = SSL_get_error(ssl_.get(), rc);
    short events = 0;
    if (err == SSL_ERROR_WANT_READ) events = POLLIN;
    else if (err == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    else if (err == SSL_ERROR_ZERO_RETURN) return false;
    else if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        return errno == 0 ? Result<bool>(false) : Result<bool>(errno_error("TLS with " + who_ + " " + doing));
    else return Error("TLS with " + who_ + " failed " + doing + ": " + last_tls_error());
    for (;;) {
        pollfd p{fd_.get(), events, 0};
        const int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n > 0) return true;
        if (n == 0) return Error("timed out " + std::string(doing) + " with " + who_);
        if (errno != EINTR) return errno_error("poll");
    }
}

Result<void> TlsLink::send(std::span<const uint8_t> bytes, Clock::time_point deadline)
{
    const SigpipeBlock no_sigpipe;
    size_t off = 0;
    while (off < bytes.size()) {
        ERR_clear_error();
        const int chunk = static_cast<int>(std::min<size_t>(bytes.size() - off, INT_MAX));
        const int rc = SSL_write(ssl_.get(), bytes.data() + off, chunk);
        if (rc > 0) {
            off += static_cast<size_t>(rc);
            continue;
        }
        TRY_ASSIGN(bool retry, wait_for_retry(rc, deadline, "sending"));
        if (!retry) return Error(who_ + " closed the connection");
    }
    return ok();
}

Result<size_t> TlsLink::receive(std::span<uint8_t> buffer, Clock::time_point deadline)
{
    const SigpipeBlock no_sigpipe;  // reading may answer a key update
    for (;;) {
        ERR_clear_error();
        const int chunk = static_cast<int>(std::min<size_t>(buffer.size(), INT_MAX));
        const int rc = SSL_read(ssl_.get(), buffer.data(), chunk);
        if (rc > 0) return static_cast<size_t>(rc);
        TRY_ASSIGN(bool retry, wait_for_retry(rc, deadline, "receiving"));
        if (!retry) return size_t{0};
    }
}

}  // namespace vvmm::net
