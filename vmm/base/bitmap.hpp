// A fixed-size bit set over pages (or chunks), as plain 64-bit words so it
// can be OR-ed with KVM's dirty logs and written to a file as it is.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace vvmm {

class Bitmap {
public:
    Bitmap() = default;
    explicit Bitmap(uint64_t bits) : bits_(bits), words_((bits + 63) / 64, 0) {}

    uint64_t size() const { return bits_; }
    bool test(uint64_t i) const { return i < bits_ && (words_[i / 64] >> (i % 64)) & 1; }
    void set(uint64_t i)
    {
        if (i < bits_) words_[i / 64] |= 1ull << (i % 64);
    }
    void set_all()
    {
        for (auto& w : words_) w = ~0ull;
        trim();
    }
    void clear() { std::fill(words_.begin(), words_.end(), 0); }
    void merge(const Bitmap& other)
    {
        for (size_t i = 0; i < words_.size() && i < other.words_.size(); ++i) words_[i] |= other.words_[i];
    }
    void merge_words(const std::vector<uint64_t>& w, uint64_t first_bit = 0);
    uint64_t count() const
    {
        uint64_t n = 0;
        for (auto w : words_) n += static_cast<uint64_t>(__builtin_popcountll(w));
        return n;
    }
    // Both work a word at a time where they can: they run inside a
    // checkpoint's pause over every page of guest RAM.
    bool any_in(uint64_t first, uint64_t n) const
    {
        const uint64_t end = std::min(first + n, bits_);
        uint64_t i = first;
        for (; i < end && i % 64; ++i)
            if (test(i)) return true;
        for (; i + 64 <= end; i += 64)
            if (words_[i / 64]) return true;
        for (; i < end; ++i)
            if (test(i)) return true;
        return false;
    }
    void set_range(uint64_t first, uint64_t n)
    {
        const uint64_t end = std::min(first + n, bits_);
        uint64_t i = first;
        for (; i < end && i % 64; ++i) set(i);
        for (; i + 64 <= end; i += 64) words_[i / 64] = ~0ull;
        for (; i < end; ++i) set(i);
    }
    std::vector<uint64_t>& words() { return words_; }
    const std::vector<uint64_t>& words() const { return words_; }

private:
    void trim()
    {
        if (bits_ % 64 && !words_.empty()) words_.back() &= (1ull << (bits_ % 64)) - 1;
    }
    uint64_t bits_ = 0;
    std::vector<uint64_t> words_;
};

// ORs `w` (bit j = page first_bit + j) into the bitmap.
inline void Bitmap::merge_words(const std::vector<uint64_t>& w, uint64_t first_bit)
{
    if (first_bit % 64 == 0) {  // the usual case: RAM regions are 2 MiB-aligned
        for (size_t k = 0; k < w.size() && first_bit / 64 + k < words_.size(); ++k) words_[first_bit / 64 + k] |= w[k];
        trim();
        return;
    }
    for (size_t k = 0; k < w.size(); ++k) {
        uint64_t word = w[k];
        while (word) {
            const unsigned b = static_cast<unsigned>(__builtin_ctzll(word));
            set(first_bit + k * 64 + b);
            word &= word - 1;
        }
    }
}

}  // namespace vvmm
