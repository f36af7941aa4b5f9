#include "coord/cluster_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "net/peer_protocol.hpp"
#include "net/tls_link.hpp"
#include "vmm/base/small_file.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::coord {
namespace {

// A secret is 32 random bytes; a file far larger than that is a mistake.
constexpr uint64_t kMaxSecretBytes = 4096;

using Clock = std::chrono::steady_clock;
using nlohmann::json;

int remaining_ms(Clock::time_point deadline)
{
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

Result<void> wait_fd(int fd, short events, Clock::time_point deadline, const char* what)
{
    for (;;) {
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, remaining_ms(deadline));
        if (n > 0) return ok();
        if (n == 0) return Error(std::string("timed out ") + what);
        if (errno != EINTR) return errno_error("poll");
    }
}

Result<UniqueFd> connect_to(const net::SocketAddress& a, Clock::time_point deadline)
{
    sockaddr_storage ss{};
    socklen_t len = 0;
    if (a.family() == net::SocketAddress::Family::ipv4) {
        auto* s = reinterpret_cast<sockaddr_in*>(&ss);
        s->sin_family = AF_INET;
        s->sin_port = htons(a.port());
        std::memcpy(&s->sin_addr, a.address().data(), 4);
        len = sizeof *s;
    } else {
        auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(a.port());
        std::memcpy(&s->sin6_addr, a.address().data(), 16);
        len = sizeof *s;
    }
    UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) return errno_error("socket");
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0) {
        if (errno != EINPROGRESS) return errno_error("cannot connect to " + a.to_string());
        TRY(wait_fd(fd.get(), POLLOUT, deadline, ("connecting to " + a.to_string()).c_str()));
        int err = 0;
        socklen_t el = sizeof err;
        ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) return errno_error("cannot connect to " + a.to_string(), err);
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

// One controller connection: reads whole messages with a deadline.
class Link {
public:
    explicit Link(net::TlsLink tls) : tls_(std::move(tls)) {}

    Result<void> send(const std::vector<uint8_t>& bytes, Clock::time_point deadline)
    {
        return tls_.send(bytes, deadline);
    }
    Result<net::Message> next(Clock::time_point deadline, const char* waiting_for)
    {
        for (;;) {
            auto m = decoder_.next();
            if (!m) return m.error().context("protocol error from " + tls_.who());
            if (m.value()) return std::move(*m.value());
            uint8_t buf[16384];
            TRY_ASSIGN(size_t n, tls_.receive(buf, deadline));
            if (n == 0)  // before its HELLO, a refusal is the likely cause
                return Error(tls_.who() + " closed the connection while this waited for " + waiting_for +
                             (greeted_ ? "" : " (see that VMM's log)"));
            decoder_.feed({buf, n});
        }
    }
    void set_greeted()
    {
        greeted_ = true;
        decoder_.accept_only_hello(false);
    }
    void expect_hello() { decoder_.accept_only_hello(true); }

private:
    net::TlsLink tls_;
    net::MessageDecoder decoder_;
    bool greeted_ = false;
};

// A VMM that accepts but does not answer must not hold the controller for
// the whole request timeout: the handshake has a short one of its own.
constexpr auto kHandshakeTimeout = std::chrono::seconds(5);

std::string describe_vm(const ClusterConfig& config, const VmEntry& vm)
{
    return vm.name + " (" + config.listen_address(vm).to_string() + ")";
}

// HELLO both ways inside TLS: the VMM learns we are a controller meaning to
// reach it; we check that the VMM there is the one we meant.
Result<void> greet(const ClusterConfig& config, const VmEntry& vm, Link& link, Clock::time_point deadline)
{
    const std::string who = describe_vm(config, vm);
    net::Hello mine;
    mine.role = net::PeerRole::controller;
    mine.id = "ctl-" + std::to_string(::getpid());
    mine.cluster = config.name;
    mine.target = config.listen_address(vm);
    mine.target_id = vm.name;
    std::vector<uint8_t> out;
    net::append_hello(out, mine);
    link.expect_hello();
    TRY(link.send(out, deadline));
    TRY_ASSIGN(net::Message m, link.next(deadline, "HELLO"));
    const auto* theirs = std::get_if<net::Hello>(&m);
    if (!theirs) return Error(who + " did not answer with HELLO");
    if (theirs->role != net::PeerRole::peer || theirs->id != vm.name ||
        theirs->listen != config.listen_address(vm) || theirs->target_id != mine.id)
        return Error(who + " says it is '" + theirs->id + "' at " + theirs->listen.to_string() + ", not VM '" + vm.name +
                     "'; not sending it anything");
    link.set_greeted();
    return ok();
}

// The request and its reply, after the handshake.
Result<json> request_reply(const ClusterConfig& config, const VmEntry& vm, Link& link, const json& request,
                           Clock::time_point deadline)
{
    const std::string who = describe_vm(config, vm);
    std::vector<uint8_t> out;
    net::append_ctl_request(out, request);
    TRY(link.send(out, deadline));
    TRY_ASSIGN(net::Message r, link.next(deadline, "its reply"));
    const auto* reply = std::get_if<net::ControlReply>(&r);
    if (!reply) return Error(who + " answered with " + std::string(net::message_name(r)) + ", not a reply");
    if (!reply->body.is_object() || !reply->body.contains("ok") || !reply->body.at("ok").is_boolean())
        return Error(who + " sent a reply without \"ok\"");
    return reply->body;
}

// A connected, authenticated link to `vm`, within the handshake's timeout.
Result<Link> open_link(const ClusterConfig& config, const std::vector<uint8_t>& secret, const VmEntry& vm,
                       Clock::time_point deadline)
{
    const auto handshake_deadline = std::min(deadline, Clock::now() + kHandshakeTimeout);
    const net::ClusterPsk psk = net::derive_cluster_psk(secret, config.name);
    TRY_ASSIGN(auto ctx, net::make_psk_tls_context(&psk));
    TRY_ASSIGN(UniqueFd fd, connect_to(config.listen_address(vm), handshake_deadline));
    auto tls = net::TlsLink::handshake(std::move(fd), ctx.get(), net::TlsLink::Side::client, handshake_deadline,
                                       describe_vm(config, vm));
    if (!tls) return Error(tls.error().message() + " (is it a VMM of cluster '" + config.name + "' with this secret?)");
    Link link(std::move(tls.value()));
    TRY(greet(config, vm, link, handshake_deadline));
    return link;
}

}  // namespace

Result<std::vector<uint8_t>> read_cluster_secret(const ClusterConfig& config)
{
    TRY_ASSIGN(auto text, read_small_file(config.secret_file.string(), kMaxSecretBytes, "cluster secret"));
    std::vector<uint8_t> secret(text.begin(), text.end());
    if (secret.empty()) return Error("the cluster secret " + config.secret_file.string() + " is empty");
    return secret;
}

Result<ClusterReply> ask_vm(const ClusterConfig& config, const std::vector<uint8_t>& secret, const std::string& vm,
                            const json& request, std::chrono::milliseconds timeout)
{
    const VmEntry* entry = config.vm(vm);
    if (!entry) return Error("no VM '" + vm + "' in " + config.file.string());
    const auto deadline = Clock::now() + timeout;
    TRY_ASSIGN(Link link, open_link(config, secret, *entry, deadline));
    TRY_ASSIGN(auto body, request_reply(config, *entry, link, request, deadline));
    return ClusterReply{vm, std::move(body)};
}

Result<ClusterReply> ask_any_vm(const ClusterConfig& config, const std::vector<uint8_t>& secret, const json& request,
                                std::chrono::milliseconds timeout)
{
    std::string why;
    // The next VMM is tried while the request has not been sent: once it is
    // (it may have started an epoch), its answer is final.
    for (const auto& vm : config.vms) {
        auto link = open_link(config, secret, vm, Clock::now() + timeout);
        if (!link) {
            why += "; " + link.error().message();
            continue;
        }
        TRY_ASSIGN(auto body, request_reply(config, vm, link.value(), request, Clock::now() + timeout));
        return ClusterReply{vm.name, std::move(body)};
    }
    return Error("no VMM of cluster '" + config.name + "' answered: " + why.substr(2));
}

}  // namespace vvmm::coord
