// One TLS 1.3 connection over a connected socket, driven synchronously with
// a deadline on every call: the controller's side of the peer channel (a CLI
// asking a VMM), and the tests' stand-ins for misbehaving peers. The VMMs
// themselves use Asio's SSL streams (peer_mesh.cpp) on the same context setup.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>

#include "net/tls_psk.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::net {

class TlsLink {
public:
    using Clock = std::chrono::steady_clock;
    enum class Side { client, server };

    // Makes `fd` non-blocking and completes the handshake by `deadline`.
    // `who` names the other end in errors.
    static Result<TlsLink> handshake(UniqueFd fd, SSL_CTX* ctx, Side side, Clock::time_point deadline,
                                     std::string who);

    Result<void> send(std::span<const uint8_t> bytes, Clock::time_point deadline);
    // At least one byte, or 0 once the other end has closed the connection.
    Result<size_t> receive(std::span<uint8_t> buffer, Clock::time_point deadline);
    int fd() const { return fd_.get(); }
    const std::string& who() const { return who_; }

private:
    TlsLink(UniqueFd fd, UniqueSsl ssl, std::string who) : fd_(std::move(fd)), ssl_(std::move(ssl)), who_(std::move(who)) {}
    // After an SSL call returned `rc`: waits for what it needs and says to
    // retry (true), or gives the error.
    Result<bool> wait_for_retry(int rc, Clock::time_point deadline, const char* doing);

    UniqueFd fd_;
    UniqueSsl ssl_;
    std::string who_;
};

}  // namespace vvmm::net
