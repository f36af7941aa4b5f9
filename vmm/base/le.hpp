// Little-endian accessors for guest-visible structures (x86 is LE, but say so).
#pragma once

#include <cstdint>
#include <cstring>
#include <span>

namespace vvmm {

template <typename T>
inline T load_le(const uint8_t* p)
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

template <typename T>
inline void store_le(uint8_t* p, T v)
{
    std::memcpy(p, &v, sizeof v);
}

inline uint16_t le16(std::span<const uint8_t> s, size_t off) { return load_le<uint16_t>(s.data() + off); }
inline uint32_t le32(std::span<const uint8_t> s, size_t off) { return load_le<uint32_t>(s.data() + off); }
inline uint64_t le64(std::span<const uint8_t> s, size_t off) { return load_le<uint64_t>(s.data() + off); }

}  // namespace vvmm
