#pragma once
/// @file
/// Host-side check of block tables before they go to the device: the kernels trust block ids
/// (they are device data), so an engine that builds tables outside SequenceManager, or a test,
/// checks them here. Plain C++17.

#include <cstdint>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

/**
 * @brief Checks a host copy of a batch's block tables.
 *
 * For every sequence s: 0 <= context_lens[s] <= max_blocks_per_seq * block_size, and each
 * block id the sequence uses (entries [0, ceil(context_lens[s] / block_size)) of its row)
 * lies in [0, num_blocks). Entries past a sequence's context are not read.
 *
 * @param block_tables [num_seqs, row_stride] int32 (host memory).
 * @param row_stride entries between rows, >= max_blocks_per_seq.
 * @param context_lens [num_seqs] int32 (host memory).
 * @param num_seqs sequences, >= 0.
 * @param max_blocks_per_seq usable entries per row, >= 1.
 * @param block_size tokens per block, >= 1.
 * @param num_blocks blocks in the cache, >= 1.
 * @throw InvalidArgument naming the first offending sequence, entry and value.
 */
inline void validate_block_tables(const std::int32_t* block_tables, std::int64_t row_stride,
                                  const std::int32_t* context_lens, int num_seqs,
                                  int max_blocks_per_seq, int block_size, std::int64_t num_blocks) {
  expects(num_seqs >= 0, "num_seqs", num_seqs, "must be >= 0");
  expects(max_blocks_per_seq >= 1, "max_blocks_per_seq", max_blocks_per_seq, "must be >= 1");
  expects(row_stride >= max_blocks_per_seq, "row_stride", row_stride,
          "must be >= max_blocks_per_seq");
  expects(block_size >= 1, "block_size", block_size, "must be >= 1");
  expects(num_blocks >= 1, "num_blocks", num_blocks, "must be >= 1");
  if (num_seqs == 0) return;
  expects(block_tables != nullptr, "block_tables", "nullptr", "must point to num_seqs rows");
  expects(context_lens != nullptr, "context_lens", "nullptr", "must point to num_seqs lengths");
  const std::int64_t capacity = static_cast<std::int64_t>(max_blocks_per_seq) * block_size;
  for (int s = 0; s < num_seqs; ++s) {
    const std::int64_t len = context_lens[s];
    expects_that(len >= 0 && len <= capacity, "context_lens[", s, "] = ", len,
                 ": must be in [0, max_blocks_per_seq * block_size = ", capacity, "]");
    const std::int64_t used = (len + block_size - 1) / block_size;
    const std::int32_t* row = block_tables + s * row_stride;
    for (std::int64_t i = 0; i < used; ++i) {
      expects_that(row[i] >= 0 && row[i] < num_blocks, "block_tables[", s, "][", i, "] = ", row[i],
                   ": block id must be in [0, num_blocks = ", num_blocks, ")");
    }
  }
}

}  // namespace radix_attention
