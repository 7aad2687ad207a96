#pragma once
/// @file
/// The host-side check of a batch's block tables (BlockTableView, core/views.hpp), used by
/// the batch planner and by anyone who builds tables outside SequenceManager before they go to
/// the device: the kernels trust block ids (they are device data). Plain C++17.

#include <cstddef>
#include <cstdint>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention {

/// num_blocks argument of validate_block_tables when the pool size is not known (the planner):
/// block ids are then only required to be >= 0.
inline constexpr std::int64_t kAnyNumBlocks = -1;

namespace detail {

inline std::int64_t used_blocks(std::int64_t context_len, std::int32_t block_size) {
  return (context_len + block_size - 1) / block_size;
}

/// The shape checks of validate_block_tables: everything but the per-row scan.
inline void check_block_table_shape(const BlockTableView& tables, std::int32_t block_size,
                                    std::int64_t num_blocks) {
  expects(block_size >= 1, "block_size", block_size, "must be >= 1");
  expects(num_blocks >= 1 || num_blocks == kAnyNumBlocks, "num_blocks", num_blocks,
          "must be >= 1 (or kAnyNumBlocks)");
  expects(tables.num_seqs >= 0, "tables.num_seqs", tables.num_seqs, "must be >= 0");
  expects(tables.max_blocks_per_seq >= 0, "tables.max_blocks_per_seq", tables.max_blocks_per_seq,
          "must be >= 0");
  expects(tables.row_stride >= tables.max_blocks_per_seq, "tables.row_stride", tables.row_stride,
          "must be >= tables.max_blocks_per_seq");
  const std::int64_t capacity = std::int64_t{tables.max_blocks_per_seq} * block_size;
  expects(tables.max_context_len >= -1 && tables.max_context_len <= capacity,
          "tables.max_context_len", tables.max_context_len,
          "must be -1 (unknown) or in [0, max_blocks_per_seq * block_size]");
  if (tables.num_seqs == 0) return;
  expects(tables.context_lens != nullptr, "tables.context_lens", "nullptr",
          "must point to num_seqs context lengths");
  expects(tables.max_blocks_per_seq == 0 || tables.block_tables != nullptr, "tables.block_tables",
          "nullptr", "must point to num_seqs rows of row_stride entries");
}

/// Checks context_lens[s] and the row entries [first, ceil(context_lens[s] / block_size)).
inline void check_block_table_row(const BlockTableView& tables, std::int32_t block_size,
                                  std::int64_t num_blocks, std::int32_t s, std::int64_t first) {
  const std::int32_t len = tables.context_lens[s];
  const std::int64_t capacity = std::int64_t{tables.max_blocks_per_seq} * block_size;
  const std::int64_t bound = tables.max_context_len >= 0 ? tables.max_context_len : capacity;
  expects_that(len >= 0 && len <= bound, "context_lens[", s, "] = ", len, ": must be in [0, ",
               tables.max_context_len >= 0 ? "max_context_len" : "max_blocks_per_seq * block_size",
               " = ", bound, "]");
  const std::int32_t* row =
      tables.block_tables + static_cast<std::ptrdiff_t>(s) * tables.row_stride;
  const std::int64_t used = used_blocks(len, block_size);
  // Branch-free scan first (vectorises); locate the offender only when there is one.
  bool bad = false;
  if (num_blocks == kAnyNumBlocks) {
    std::int32_t lowest = 0;
    for (std::int64_t b = first; b < used; ++b) lowest |= row[b];  // sign bit set iff an id < 0
    bad = lowest < 0;
  } else {
    const auto limit = static_cast<std::uint64_t>(num_blocks);
    std::uint64_t out_of_range = 0;
    for (std::int64_t b = first; b < used; ++b) {
      // A negative id wraps to a huge unsigned value: one comparison covers both bounds.
      out_of_range |= static_cast<std::uint64_t>(static_cast<std::int64_t>(row[b])) >= limit;
    }
    bad = out_of_range != 0;
  }
  if (!bad) return;
  for (std::int64_t b = first; b < used; ++b) {
    expects_that(row[b] >= 0 && (num_blocks == kAnyNumBlocks || row[b] < num_blocks),
                 "block_tables[", s, "][", b, "] = ", row[b],
                 num_blocks == kAnyNumBlocks
                     ? ": a block the context uses must be a block id >= 0"
                     : ": a block the context uses must be a block id in [0, num_blocks)");
  }
}

}  // namespace detail

/**
 * @brief Checks a host copy of a batch's block tables.
 *
 * Shape: block_size >= 1, num_seqs >= 0, 0 <= max_blocks_per_seq <= row_stride, max_context_len
 * -1 or within the capacity max_blocks_per_seq * block_size, non-null arrays for a non-empty
 * batch. For every sequence s: 0 <= context_lens[s] <= max_context_len (when known, else the
 * capacity), and each block id the sequence uses (entries [0, ceil(context_lens[s] /
 * block_size)) of its row) lies in [0, num_blocks). Entries past a sequence's context are not
 * read.
 *
 * @param tables the batch (host memory).
 * @param block_size tokens per block, >= 1.
 * @param num_blocks blocks in the cache, >= 1; kAnyNumBlocks checks only that ids are >= 0.
 * @throw InvalidArgument naming the first offending argument, sequence, entry and value.
 */
inline void validate_block_tables(const BlockTableView& tables, std::int32_t block_size,
                                  std::int64_t num_blocks) {
  detail::check_block_table_shape(tables, block_size, num_blocks);
  for (std::int32_t s = 0; s < tables.num_seqs; ++s) {
    detail::check_block_table_row(tables, block_size, num_blocks, s, 0);
  }
}

/**
 * @brief validate_block_tables over raw arrays: `block_tables` [num_seqs, row_stride] int32,
 * `context_lens` [num_seqs] int32 (host memory), `max_blocks_per_seq` usable entries per row.
 * @throw InvalidArgument as validate_block_tables(const BlockTableView&, ...), and if
 * max_blocks_per_seq < 1 (the decode launchers need a non-empty row).
 */
inline void validate_block_tables(const std::int32_t* block_tables, std::int64_t row_stride,
                                  const std::int32_t* context_lens, int num_seqs,
                                  int max_blocks_per_seq, int block_size, std::int64_t num_blocks) {
  expects(max_blocks_per_seq >= 1, "max_blocks_per_seq", max_blocks_per_seq, "must be >= 1");
  validate_block_tables(
      BlockTableView{block_tables, context_lens, num_seqs, max_blocks_per_seq, row_stride, -1},
      block_size, num_blocks);
}

}  // namespace radix_attention
