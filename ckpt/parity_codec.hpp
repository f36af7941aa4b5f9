// Erasure coding of a parity set's checkpoint images (diskless checkpoints,
// DESIGN.md): N data blocks (one per member VM, the same offset of each
// image) and K parity blocks, on ISA-L (Debian's libisal-dev). K = 1 is plain
// XOR (an all-ones parity row); K > 1 is Reed-Solomon with a Cauchy matrix,
// so any K lost blocks, data or parity, can be rebuilt from the others.
// Parity is linear: a block's change (old XOR new of its dirty pages) is
// folded into the parity without the other members' data.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "vmm/base/result.hpp"

namespace vvmm::ckpt {

class ParityCodec {
public:
    static constexpr unsigned kMaxData = 32;
    static constexpr unsigned kMaxParity = 4;

    enum class Kind { xor_parity, reed_solomon };

    // xor_parity needs parity_blocks == 1; reed_solomon 1..kMaxParity.
    static Result<ParityCodec> create(Kind kind, unsigned data_blocks, unsigned parity_blocks);

    unsigned data_blocks() const { return n_; }
    unsigned parity_blocks() const { return k_; }

    // parity[j] = the j-th parity of data[0..N), every block `len` bytes.
    void encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity, size_t len) const;
    // Folds data block `index`'s change (old XOR new, `len` bytes) into
    // every parity block at the same offset.
    void update(unsigned index, const uint8_t* delta, std::span<uint8_t* const> parity, size_t len) const;
    // The same for one parity block (index `parity_index` < K): what the
    // node holding just that block applies.
    void update_block(unsigned index, unsigned parity_index, const uint8_t* delta, uint8_t* parity, size_t len) const;
    // Rebuilds the blocks marked lost. `blocks` holds the N data blocks then
    // the K parity blocks; lost ones are overwritten, the others read. At
    // most K lost, or an error that says so.
    Result<void> rebuild(std::span<uint8_t* const> blocks, std::span<const bool> lost, size_t len) const;

private:
    ParityCodec(unsigned n, unsigned k, std::vector<uint8_t> matrix);

    unsigned n_, k_;
    std::vector<uint8_t> matrix_;       // (N + K) x N: identity, then the parity rows
    std::vector<uint8_t> encode_tables_;  // ISA-L's expanded tables for the parity rows
};

}  // namespace vvmm::ckpt
