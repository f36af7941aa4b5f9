// Byte streams for saved VM state: little-endian, length-checked. A reader
// never reads past its end and never trusts a length it did not check, since
// a checkpoint file is user input.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm {

class StateWriter {
public:
    void u8(uint8_t v) { raw(&v, 1); }
    void u16(uint16_t v) { le(v); }
    void u32(uint32_t v) { le(v); }
    void u64(uint64_t v) { le(v); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    void bytes(std::span<const uint8_t> b)
    {
        u64(b.size());
        raw(b.data(), b.size());
    }
    void string(const std::string& s) { bytes({reinterpret_cast<const uint8_t*>(s.data()), s.size()}); }
    // A KVM uapi struct copied as it is: its layout is fixed by the kernel ABI
    // (x86-64 little-endian only), and the length is recorded so a reader can
    // refuse a mismatch.
    template <typename T>
    void pod(const T& v)
    {
        static_assert(std::is_trivially_copyable_v<T>);
        bytes({reinterpret_cast<const uint8_t*>(&v), sizeof v});
    }
    const std::vector<uint8_t>& data() const { return buf_; }
    std::vector<uint8_t> take() { return std::move(buf_); }

private:
    template <typename T>
    void le(T v)
    {
        uint8_t b[sizeof(T)];
        for (size_t i = 0; i < sizeof(T); ++i) b[i] = static_cast<uint8_t>(v >> (8 * i));
        raw(b, sizeof b);
    }
    void raw(const void* p, size_t n)
    {
        auto* c = static_cast<const uint8_t*>(p);
        buf_.insert(buf_.end(), c, c + n);
    }
    std::vector<uint8_t> buf_;
};

class StateReader {
public:
    // `what` names the stream in errors ("section 'serial'").
    StateReader(std::span<const uint8_t> data, std::string what) : data_(data), what_(std::move(what)) {}

    Result<uint8_t> u8() { return le<uint8_t>(); }
    Result<uint16_t> u16() { return le<uint16_t>(); }
    Result<uint32_t> u32() { return le<uint32_t>(); }
    Result<uint64_t> u64() { return le<uint64_t>(); }
    Result<bool> boolean()
    {
        TRY_ASSIGN(uint8_t v, u8());
        if (v > 1) return err("bad boolean " + std::to_string(v));
        return v == 1;
    }
    // A length-prefixed byte string of at most `max` bytes.
    Result<std::span<const uint8_t>> bytes(size_t max = SIZE_MAX)
    {
        TRY_ASSIGN(uint64_t n, u64());
        if (n > max) return err("field of " + std::to_string(n) + " bytes, at most " + std::to_string(max) + " allowed");
        if (n > remaining()) return err("truncated");
        std::span<const uint8_t> s = data_.subspan(pos_, n);
        pos_ += n;
        return s;
    }
    Result<std::string> string(size_t max = 4096)
    {
        TRY_ASSIGN(auto b, bytes(max));
        return std::string(b.begin(), b.end());
    }
    template <typename T>
    Result<T> pod()
    {
        static_assert(std::is_trivially_copyable_v<T>);
        TRY_ASSIGN(auto b, bytes());
        if (b.size() != sizeof(T))
            return err("structure of " + std::to_string(b.size()) + " bytes, expected " + std::to_string(sizeof(T)));
        T v;
        std::memcpy(&v, b.data(), sizeof v);
        return v;
    }
    size_t remaining() const { return data_.size() - pos_; }
    // Call after reading a section: trailing bytes mean a layout mismatch.
    Result<void> expect_end() const
    {
        if (remaining() != 0) return err(std::to_string(remaining()) + " unexpected trailing bytes");
        return ok();
    }
    Error err(const std::string& what) const { return Error(what_ + ": " + what); }

private:
    template <typename T>
    Result<T> le()
    {
        if (remaining() < sizeof(T)) return err("truncated");
        T v = 0;
        for (size_t i = 0; i < sizeof(T); ++i) v |= static_cast<T>(static_cast<T>(data_[pos_ + i]) << (8 * i));
        pos_ += sizeof(T);
        return v;
    }
    std::span<const uint8_t> data_;
    size_t pos_ = 0;
    std::string what_;
};

}  // namespace vvmm
