#pragma once
/// @file
/// Batch planner internals: input checks and the batch fingerprint (included by
/// cache/batch_planner.hpp; not a public header).

#include <cstddef>
#include <cstdint>
#include <limits>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

struct HostBlockTableView;
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
    // Branch-free scan first (vectorises); locate the offender only when there is one.
    std::int32_t lowest = 0;
    for (std::int64_t b = 0; b < used; ++b) lowest |= row[b];  // sign bit set iff some id < 0
    if (lowest < 0) {
      for (std::int64_t b = 0; b < used; ++b) {
        expects_that(row[b] >= 0, "block_tables[", s, "][", b, "] = ", row[b],
                     ": a block the context uses must be a block id >= 0");
      }
    }
  }
}

/// 64-bit hash over 32-bit words: an FNV-1a step per value (x = (x ^ value) * prime), then a
/// splitmix64 finaliser for well-spread bits. Runs of words (block-table rows) go through four
/// independent lanes of 64-bit steps, folded into the state afterwards, so the multiplies
/// overlap instead of forming one serial chain (about 5x faster on long rows). Every step and
/// the finaliser are bijections of the state for given inputs, so two inputs of the same shape
/// that differ in one value always hash differently.
class WordHasher {
 public:
  static constexpr std::uint64_t kPrime = 0x100000001b3ull;  // FNV-1a 64-bit prime

  void add(std::int32_t word) { state_ = (state_ ^ static_cast<std::uint32_t>(word)) * kPrime; }

  void add_range(const std::int32_t* words, std::int64_t n) {
    // Unrolled by hand: -O2 builds do not unroll the lane loop themselves.
    std::uint64_t l0 = state_, l1 = state_ ^ 1, l2 = state_ ^ 2, l3 = state_ ^ 3;
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      l0 = (l0 ^ pair(words[i], words[i + 1])) * kPrime;
      l1 = (l1 ^ pair(words[i + 2], words[i + 3])) * kPrime;
      l2 = (l2 ^ pair(words[i + 4], words[i + 5])) * kPrime;
      l3 = (l3 ^ pair(words[i + 6], words[i + 7])) * kPrime;
    }
    state_ = (state_ ^ l0) * kPrime;
    state_ = (state_ ^ l1) * kPrime;
    state_ = (state_ ^ l2) * kPrime;
    state_ = (state_ ^ l3) * kPrime;
    for (; i < n; ++i) add(words[i]);
  }

  std::uint64_t finish() const {
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  static std::uint64_t pair(std::int32_t lo, std::int32_t hi) {
    return static_cast<std::uint64_t>(static_cast<std::uint32_t>(lo)) |
           (static_cast<std::uint64_t>(static_cast<std::uint32_t>(hi)) << 32);
  }
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
    h.add_range(batch.block_tables + static_cast<std::ptrdiff_t>(s) * batch.max_blocks_per_seq,
                used_blocks(len, batch.block_size));
  }
  return h.finish();
}

}  // namespace detail
}  // namespace radix_attention
