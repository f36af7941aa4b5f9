#include "net/tls_psk.hpp"

#include <cstring>

#include <openssl/err.h>

#include "vmm/base/crypto.hpp"

namespace vvmm::net {
namespace {

// Both suites hash with SHA-256, the hash the PSK session is made for.
constexpr const char* kCipherSuites = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";
constexpr uint8_t kAes128GcmSha256[2] = {0x13, 0x01};

// Our own ex_data slot: Asio keeps its verify callback in the context's app data.
int psk_index()
{
    static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

const ClusterPsk* psk_of(SSL* ssl)
{
    return static_cast<const ClusterPsk*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), psk_index()));
}

SSL_SESSION* psk_session(SSL* ssl, const ClusterPsk& psk)
{
    const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
    SSL_SESSION* session = SSL_SESSION_new();
    if (!session || !cipher || SSL_SESSION_set1_master_key(session, psk.key.data(), psk.key.size()) != 1 ||
        SSL_SESSION_set_cipher(session, cipher) != 1 || SSL_SESSION_set_protocol_version(session, TLS1_3_VERSION) != 1) {
        SSL_SESSION_free(session);
        return nullptr;
    }
    return session;
}

// Client: offer the cluster's PSK (md is null on the first ClientHello, the
// negotiated hash after a HelloRetryRequest; ours is always SHA-256).
int use_session(SSL* ssl, const EVP_MD* md, const unsigned char** id, size_t* id_length, SSL_SESSION** session)
{
    const ClusterPsk* psk = psk_of(ssl);
    if (!psk || (md && md != EVP_sha256())) return 0;
    *session = psk_session(ssl, *psk);
    if (!*session) return 0;
    *id = reinterpret_cast<const unsigned char*>(psk->identity.data());
    *id_length = psk->identity.size();
    return 1;
}

// Server: the PSK for the identity the client offers, if it is ours. For
// any other identity no PSK is found, and with no certificate to fall back
// on the handshake fails.
int find_session(SSL* ssl, const unsigned char* identity, size_t identity_length, SSL_SESSION** session)
{
    const ClusterPsk* psk = psk_of(ssl);
    *session = nullptr;
    if (!psk || identity_length != psk->identity.size() ||
        std::memcmp(identity, psk->identity.data(), identity_length) != 0)
        return 1;
    *session = psk_session(ssl, *psk);
    return *session ? 1 : 0;
}

}  // namespace

ClusterPsk derive_cluster_psk(std::span<const uint8_t> secret, std::string_view cluster)
{
    ClusterPsk psk;
    psk.identity = "vvmm-v3/" + std::string(cluster);
    hkdf_sha256(secret, as_bytes("vvmm-tls-psk-v3"), as_bytes(cluster), psk.key);
    return psk;
}

std::string last_tls_error()
{
    const unsigned long code = ERR_get_error();
    ERR_clear_error();
    if (code == 0) return "TLS error";
    char text[256];
    ERR_error_string_n(code, text, sizeof text);
    const char* reason = ERR_reason_error_string(code);
    return reason ? reason : text;
}

Result<void> configure_psk_tls(SSL_CTX* ctx, const ClusterPsk* psk)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 || SSL_CTX_set_ciphersuites(ctx, kCipherSuites) != 1 ||
        SSL_CTX_set_num_tickets(ctx, 0) != 1)
        return Error("cannot set up TLS 1.3: " + last_tls_error());
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    if (psk_index() < 0 || SSL_CTX_set_ex_data(ctx, psk_index(), const_cast<ClusterPsk*>(psk)) != 1)
        return Error("cannot set up TLS: " + last_tls_error());
    SSL_CTX_set_psk_use_session_callback(ctx, use_session);
    SSL_CTX_set_psk_find_session_callback(ctx, find_session);
    return ok();
}

Result<UniqueSslCtx> make_psk_tls_context(const ClusterPsk* psk)
{
    UniqueSslCtx ctx(SSL_CTX_new(TLS_method()));
    if (!ctx) return Error("cannot create a TLS context: " + last_tls_error());
    TRY(configure_psk_tls(ctx.get(), psk));
    return ctx;
}

}  // namespace vvmm::net
