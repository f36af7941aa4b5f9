#include "ckpt/parity_codec.hpp"

#include <isa-l/erasure_code.h>

#include <algorithm>
#include <string>

namespace vvmm::ckpt {
namespace {

// ISA-L takes int lengths; callers work in chunks far below that.
int as_len(size_t len) { return static_cast<int>(std::min<size_t>(len, 1u << 30)); }

std::vector<uint8_t> tables_for(unsigned n, unsigned rows, uint8_t* coefficients)
{
    std::vector<uint8_t> tables(32u * n * rows);
    ec_init_tables(static_cast<int>(n), static_cast<int>(rows), coefficients, tables.data());
    return tables;
}

}  // namespace

Result<ParityCodec> ParityCodec::create(Kind kind, unsigned n, unsigned k)
{
    if (n == 0 || n > kMaxData) return Error("a parity set holds 1.." + std::to_string(kMaxData) + " VMs, not " + std::to_string(n));
    if (kind == Kind::xor_parity && k != 1) return Error("XOR parity has exactly 1 parity block");
    if (k == 0 || k > kMaxParity) return Error("Reed-Solomon parity has 1.." + std::to_string(kMaxParity) + " blocks, not " + std::to_string(k));
    std::vector<uint8_t> matrix(size_t{n + k} * n);
    if (kind == Kind::xor_parity) {
        for (unsigned i = 0; i < n; ++i) matrix[size_t{i} * n + i] = 1;
        std::fill(matrix.begin() + size_t{n} * n, matrix.end(), uint8_t{1});
    } else {
        // Identity on top; every square submatrix of the Cauchy part is invertible.
        gf_gen_cauchy1_matrix(matrix.data(), static_cast<int>(n + k), static_cast<int>(n));
    }
    return ParityCodec(n, k, std::move(matrix));
}

ParityCodec::ParityCodec(unsigned n, unsigned k, std::vector<uint8_t> matrix)
    : n_(n), k_(k), matrix_(std::move(matrix)), encode_tables_(tables_for(n, k, matrix_.data() + size_t{n} * n))
{
}

void ParityCodec::encode(std::span<const uint8_t* const> data, std::span<uint8_t* const> parity, size_t len) const
{
    ec_encode_data(as_len(len), static_cast<int>(n_), static_cast<int>(k_), const_cast<uint8_t*>(encode_tables_.data()),
                   const_cast<uint8_t**>(data.data()), const_cast<uint8_t**>(parity.data()));
}

void ParityCodec::update(unsigned index, const uint8_t* delta, std::span<uint8_t* const> parity, size_t len) const
{
    ec_encode_data_update(as_len(len), static_cast<int>(n_), static_cast<int>(k_), static_cast<int>(index),
                          const_cast<uint8_t*>(encode_tables_.data()), const_cast<uint8_t*>(delta),
                          const_cast<uint8_t**>(parity.data()));
}

void ParityCodec::update_block(unsigned index, unsigned parity_index, const uint8_t* delta, uint8_t* parity,
                               size_t len) const
{
    // ec_init_tables lays the tables out row by row, 32 bytes per data block.
    gf_vect_mad(as_len(len), static_cast<int>(n_), static_cast<int>(index),
                const_cast<uint8_t*>(encode_tables_.data()) + size_t{32} * n_ * parity_index, const_cast<uint8_t*>(delta),
                parity);
}

Result<void> ParityCodec::rebuild(std::span<uint8_t* const> blocks, std::span<const bool> lost, size_t len) const
{
    const unsigned total = n_ + k_;
    if (blocks.size() != total || lost.size() != total) return Error("rebuild needs all " + std::to_string(total) + " blocks");
    std::vector<unsigned> survivors, lost_data, lost_parity;
    for (unsigned i = 0; i < total; ++i) {
        if (!lost[i]) survivors.push_back(i);
        else (i < n_ ? lost_data : lost_parity).push_back(i);
    }
    if (lost_data.size() + lost_parity.size() > k_)
        return Error(std::to_string(lost_data.size() + lost_parity.size()) + " blocks of the set are lost; its " +
                     std::to_string(k_) + " parity block(s) can rebuild at most " + std::to_string(k_));
    if (!lost_data.empty()) {
        // The rows of N survivors map the data to them; their inverse maps
        // the survivors back to the data, and its rows for the lost blocks
        // rebuild exactly those.
        std::vector<uint8_t> rows(size_t{n_} * n_), inverse(size_t{n_} * n_);
        std::vector<uint8_t*> sources(n_);
        for (unsigned r = 0; r < n_; ++r) {
            std::copy_n(matrix_.begin() + size_t{survivors[r]} * n_, n_, rows.begin() + size_t{r} * n_);
            sources[r] = blocks[survivors[r]];
        }
        if (gf_invert_matrix(rows.data(), inverse.data(), static_cast<int>(n_)) != 0)
            return Error("the surviving blocks do not determine the lost ones (singular matrix)");
        std::vector<uint8_t> recover(size_t{lost_data.size()} * n_);
        std::vector<uint8_t*> targets;
        for (size_t i = 0; i < lost_data.size(); ++i) {
            std::copy_n(inverse.begin() + size_t{lost_data[i]} * n_, n_, recover.begin() + i * n_);
            targets.push_back(blocks[lost_data[i]]);
        }
        auto tables = tables_for(n_, static_cast<unsigned>(lost_data.size()), recover.data());
        ec_encode_data(as_len(len), static_cast<int>(n_), static_cast<int>(lost_data.size()), tables.data(), sources.data(),
                       targets.data());
    }
    if (!lost_parity.empty()) {
        // With every data block present again, lost parity is plain encoding.
        std::vector<uint8_t> coefficients;
        std::vector<uint8_t*> targets;
        for (unsigned p : lost_parity) {
            coefficients.insert(coefficients.end(), matrix_.begin() + size_t{p} * n_, matrix_.begin() + size_t{p + 1} * n_);
            targets.push_back(blocks[p]);
        }
        auto tables = tables_for(n_, static_cast<unsigned>(lost_parity.size()), coefficients.data());
        ec_encode_data(as_len(len), static_cast<int>(n_), static_cast<int>(lost_parity.size()), tables.data(),
                       const_cast<uint8_t**>(blocks.data()), targets.data());
    }
    return ok();
}

}  // namespace vvmm::ckpt
