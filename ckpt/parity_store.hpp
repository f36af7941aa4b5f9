// One parity block of one parity set, as the node that holds it keeps it
// (diskless checkpoints, issue 12): a file per epoch in the node's memory
// root, <root>/parity/<set>.p<j>/<E>.img, and beside it <E>.json with the
// block's length and an xxh3 per 2 MiB chunk, sealed with the cluster's key.
//
// Epoch E starts from the block of the last committed epoch (or zeros) and
// folds in the members' changes (old XOR new of their pages) as they come;
// finish() makes it durable and checksummed, commit() drops the older
// epochs, abort() drops E. So the committed epoch's parity is always whole
// while the next one is being built.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ckpt/manifest_seal.hpp"
#include "ckpt/parity_codec.hpp"
#include "vmm/base/result.hpp"
#include "vmm/base/unique_fd.hpp"

namespace vvmm::ckpt {

struct ParityRecord {
    uint64_t epoch = 0;
    uint64_t length = 0;                 // bytes: the longest member image folded in so far
    std::vector<uint64_t> chunk_xxh3;    // per kChunkSize of the block (the last one may be shorter)
};

class ParityBlockStore {
public:
    // `dir`: this block's directory; `parity_index`: which of the set's K
    // blocks; `max_bytes`: the longest member image the set can have.
    ParityBlockStore(std::string dir, const ParityCodec& codec, unsigned parity_index, SealKey key, uint64_t max_bytes);

    // Starts epoch `epoch` from committed epoch `base` (nullopt: zeros).
    Result<void> begin(uint64_t epoch, std::optional<uint64_t> base);
    // Folds member `member`'s change at byte `offset` of its image into the block.
    Result<void> apply(unsigned member, uint64_t offset, std::span<const uint8_t> delta);
    // Checksums and publishes the epoch's block; its record is what the
    // cluster manifest of the epoch lists for this block.
    Result<ParityRecord> finish();
    // Finished blocks of epochs not in `epochs` go (the committed ones stay).
    void keep_only(const std::vector<uint64_t>& epochs);
    // The epoch being built goes; the finished ones stay.
    void abort();

    // The record of a finished epoch, its seal checked.
    Result<ParityRecord> record(uint64_t epoch) const;
    // Chunk `c` of a finished epoch's block, checked against its record.
    Result<std::vector<uint8_t>> read_chunk(const ParityRecord& record, uint64_t c) const;
    // Finished epochs present, ascending.
    std::vector<uint64_t> epochs() const;

private:
    std::string path(uint64_t epoch, const char* ext) const;

    std::string dir_;
    const ParityCodec& codec_;
    unsigned parity_index_;
    SealKey key_;
    uint64_t max_bytes_;
    std::optional<uint64_t> building_;  // the epoch begun and not finished or aborted
    uint64_t length_ = 0;
    UniqueFd fd_;
    std::vector<uint8_t> buffer_;
};

}  // namespace vvmm::ckpt
