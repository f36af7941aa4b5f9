// Hashes, MACs, key derivation and random bytes from OpenSSL's libcrypto:
// security code comes from a maintained library, never from this project.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string_view>

namespace vvmm {

inline constexpr size_t kSha256Size = 32;
using Sha256Digest = std::array<uint8_t, kSha256Size>;

Sha256Digest sha256(std::span<const uint8_t> data);
Sha256Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> data);

// RFC 5869 HKDF with SHA-256 (extract, then expand into `out`, at most
// 255 * 32 bytes). Aborts if libcrypto fails, which only a broken
// installation does: a caller could not go on without the key anyway.
void hkdf_sha256(std::span<const uint8_t> key_material, std::span<const uint8_t> salt,
                 std::span<const uint8_t> info, std::span<uint8_t> out);

// Compares in time independent of where the contents differ (for MACs);
// different lengths are unequal.
bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Cryptographically strong random bytes; aborts if there are none to have.
void random_bytes(std::span<uint8_t> out);

inline std::span<const uint8_t> as_bytes(std::string_view text)
{
    return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

}  // namespace vvmm
