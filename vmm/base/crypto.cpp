#include "vmm/base/crypto.hpp"

#include <cstdio>
#include <cstdlib>
#include <memory>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

namespace vvmm {
namespace {

[[noreturn]] void die(const char* what)
{
    std::fprintf(stderr, "vvmm: libcrypto failed in %s\n", what);
    std::abort();
}

struct PkeyCtxFree {
    void operator()(EVP_PKEY_CTX* c) const { EVP_PKEY_CTX_free(c); }
};

}  // namespace

Sha256Digest sha256(std::span<const uint8_t> data)
{
    Sha256Digest out;
    unsigned int n = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr) != 1 || n != out.size())
        die("SHA-256");
    return out;
}

Sha256Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data)
{
    Sha256Digest out;
    unsigned int n = 0;
    // HMAC() takes a null key pointer for an empty key badly: give it a valid one.
    static const uint8_t empty = 0;
    if (!HMAC(EVP_sha256(), key.empty() ? &empty : key.data(), static_cast<int>(key.size()), data.data(),
              data.size(), out.data(), &n) ||
        n != out.size())
        die("HMAC-SHA256");
    return out;
}

void hkdf_sha256(std::span<const uint8_t> key_material, std::span<const uint8_t> salt,
                 std::span<const uint8_t> info, std::span<uint8_t> out)
{
    std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
    static const uint8_t empty = 0;
    size_t n = out.size();
    if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 || EVP_PKEY_CTX_set_hkdf_md(ctx.get(), EVP_sha256()) != 1 ||
        EVP_PKEY_CTX_set1_hkdf_salt(ctx.get(), salt.empty() ? &empty : salt.data(), static_cast<int>(salt.size())) != 1 ||
        EVP_PKEY_CTX_set1_hkdf_key(ctx.get(), key_material.empty() ? &empty : key_material.data(),
                                   static_cast<int>(key_material.size())) != 1 ||
        EVP_PKEY_CTX_add1_hkdf_info(ctx.get(), info.data(), static_cast<int>(info.size())) != 1 ||
        EVP_PKEY_derive(ctx.get(), out.data(), &n) != 1 || n != out.size())
        die("HKDF-SHA256");
}

bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b)
{
    return a.size() == b.size() && (a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0);
}

void random_bytes(std::span<uint8_t> out)
{
    if (!out.empty() && RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) die("RAND_bytes");
}

}  // namespace vvmm
