#pragma once
/// @file
/// Batch planner internals: input checks and the batch fingerprint (included by
/// cache/batch_planner.hpp; not a public header).

#include <cstddef>
#include <cstdint>
#include <limits>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

struct BlockTableView;
struct PlannerOptions;

namespace detail {

inline std::int64_t used_blocks(std::int32_t context_len, std::int32_t block_size) {
  return (std::int64_t{context_len} + block_size - 1) / block_size;
}

template <class View>
void check_block_table_view(const View& batch) {
  expects(batch.block_size >= 1, "batch.block_size", batch.block_size, "must be >= 1");
  expects(batch.num_seqs >= 0, "batch.num_seqs", batch.num_seqs, "must be >= 0");
  expects(batch.max_blocks_per_seq >= 0, "batch.max_blocks_per_seq", batch.max_blocks_per_seq,
          "must be >= 0");
  if (batch.num_seqs == 0) return;
  expects(batch.context_lens != nullptr, "batch.context_lens", "nullptr",
          "must point to num_seqs context lengths");
  expects(batch.max_blocks_per_seq == 0 || batch.block_tables != nullptr, "batch.block_tables",
          "nullptr", "must point to num_seqs * max_blocks_per_seq entries");
  const std::int64_t capacity = std::int64_t{batch.max_blocks_per_seq} * batch.block_size;
  for (std::int32_t s = 0; s < batch.num_seqs; ++s) {
    const std::int32_t len = batch.context_lens[s];
    expects_that(len >= 0, "context_lens[", s, "] = ", len, ": must be >= 0");
    expects_that(len <= capacity, "context_lens[", s, "] = ", len,
                 ": exceeds max_blocks_per_seq * block_size = ", capacity);
    const std::int32_t* row =
        batch.block_tables + static_cast<std::ptrdiff_t>(s) * batch.max_blocks_per_seq;
    const std::int64_t used = used_blocks(len, batch.block_size);
    for (std::int64_t b = 0; b < used; ++b) {
      expects_that(row[b] >= 0, "block_tables[", s, "][", b, "] = ", row[b],
                   ": a block the context uses must be a block id >= 0");
    }
  }
}

/// 64-bit hash over 32-bit words: an FNV-1a step per word (x = (x ^ word) * prime), then a
/// splitmix64 finaliser for well-spread bits. Each step is a bijection of the state for a given
/// word, so two inputs of the same shape that differ in one word always hash differently.
class WordHasher {
 public:
  void add(std::int32_t word) {
    state_ = (state_ ^ static_cast<std::uint32_t>(word)) * 0x100000001b3ull;
  }
  std::uint64_t finish() const {
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ull;  // FNV-1a 64-bit offset basis
};

template <class View>
std::uint64_t fingerprint_unchecked(const View& batch) {
  WordHasher h;
  h.add(batch.num_seqs);
  h.add(batch.block_size);
  for (std::int32_t s = 0; s < batch.num_seqs; ++s) {
    const std::int32_t len = batch.context_lens[s];
    h.add(len);
    const std::int32_t* row =
        batch.block_tables + static_cast<std::ptrdiff_t>(s) * batch.max_blocks_per_seq;
    const std::int64_t used = used_blocks(len, batch.block_size);
    for (std::int64_t b = 0; b < used; ++b) h.add(row[b]);
  }
  return h.finish();
}

}  // namespace detail
}  // namespace radix_attention
