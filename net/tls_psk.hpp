// The peer channel's security: TLS 1.3 (OpenSSL) with an external
// pre-shared key (RFC 8446 section 2.2), no certificates.
//
// Why a PSK: every VMM and controller of a cluster already holds the
// cluster's secret file; a PSK handshake proves possession of it on both
// sides (the client's binder, the server's Finished), and the (EC)DHE key
// exchange OpenSSL adds (psk_dhe_ke) gives every connection fresh keys with
// forward secrecy. Records are encrypted and authenticated (AES-128-GCM or
// ChaCha20-Poly1305), so nothing can be read, injected, replayed or
// reordered on the path. Whom each end meant to reach is checked inside the
// channel (peer_protocol.hpp, HELLO), since every member holds the same key.
//
// The key: HKDF-SHA256(secret, salt "vvmm-tls-psk-v3", info cluster name),
// identity "vvmm-v3/<cluster>": the same secret used by two clusters gives
// unrelated keys, and a VMM of another cluster finds no key for its identity.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <openssl/ssl.h>

#include "vmm/base/result.hpp"

namespace vvmm::net {

struct ClusterPsk {
    std::string identity;
    std::array<uint8_t, 32> key{};
};

ClusterPsk derive_cluster_psk(std::span<const uint8_t> secret, std::string_view cluster);

// Sets up `ctx` (either side may use it) for TLS 1.3 only, authenticated by
// `psk` alone: no certificate, no session tickets, no other version. `psk`
// must outlive `ctx`.
Result<void> configure_psk_tls(SSL_CTX* ctx, const ClusterPsk* psk);

struct SslCtxFree {
    void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using UniqueSslCtx = std::unique_ptr<SSL_CTX, SslCtxFree>;
struct SslFree {
    void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using UniqueSsl = std::unique_ptr<SSL, SslFree>;

// A new context configured by configure_psk_tls().
Result<UniqueSslCtx> make_psk_tls_context(const ClusterPsk* psk);

// The reason for OpenSSL's last error on this thread (and clears the queue).
std::string last_tls_error();

}  // namespace vvmm::net
