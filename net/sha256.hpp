// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), written here because the
// project links no crypto library. Used to authenticate peers of a cluster
// (peer_protocol.hpp, auth_tag); not meant to be fast.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace vvmm::net {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hashing: any split of the input into update() calls gives the
// same digest as one sha256() call over all of it.
class Sha256 {
public:
    static constexpr size_t kBlockSize = 64;

    Sha256() { reset(); }
    void update(std::span<const uint8_t> data);
    void update(std::string_view text)
    {
        update(std::span(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
    }
    // The digest of everything given since construction (or the last
    // finish()); the object is then reset and can hash a new message.
    Sha256Digest finish();

private:
    void reset();
    void compress(const uint8_t* block);

    std::array<uint32_t, 8> state_;
    std::array<uint8_t, kBlockSize> block_;
    size_t block_used_ = 0;
    uint64_t total_bytes_ = 0;
};

Sha256Digest sha256(std::span<const uint8_t> data);
Sha256Digest hmac_sha256(std::span<const uint8_t> key, std::span<const uint8_t> message);

// True if both hold the same bytes; for equal sizes the time taken does not
// depend on where they differ (compare MACs with this, never memcmp). Sizes
// are not secret: different sizes return false at once.
bool equal_constant_time(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace vvmm::net
