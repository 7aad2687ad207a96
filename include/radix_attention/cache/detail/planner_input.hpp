#pragma once
/// @file
/// Batch planner internals: the planner's view of a checked batch and the batch fingerprint
/// (included by cache/batch_planner.hpp; not a public header).

#include <cstddef>
#include <cstdint>

#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention::detail {

/// A batch as the planner's stages read it: rows of block ids and the context lengths. Stages
/// that need no block ids (the cost model, the segments) get one with block_tables == nullptr.
struct BatchRows {
  const std::int32_t* block_tables = nullptr;
  std::int64_t row_stride = 0;
  const std::int32_t* context_lens = nullptr;
  std::int32_t num_seqs = 0;
  std::int32_t block_size = 1;
  const std::int32_t* row(std::int32_t q) const {
    return block_tables + static_cast<std::ptrdiff_t>(q) * row_stride;
  }
};

/// validate_block_tables (ids only required to be >= 0: the planner does not know the pool),
/// then the planner's view of the batch.
inline BatchRows checked_rows(const BlockTableView& tables, std::int32_t block_size) {
  validate_block_tables(tables, block_size, kAnyNumBlocks);
  return BatchRows{tables.block_tables, tables.row_stride, tables.context_lens, tables.num_seqs,
                   block_size};
}

/// 64-bit hash over 32-bit words: an FNV-1a step per value (x = (x ^ value) * prime), then a
/// splitmix64 finaliser for well-spread bits. Every step and the finaliser are bijections of the
/// state for a given value, and each step is injective in the value for a given state, so two
/// inputs of the same length that differ in one value always hash differently.
class WordHasher {
 public:
  static constexpr std::uint64_t kPrime = 0x100000001b3ull;  // FNV-1a 64-bit prime

  void add(std::int32_t word) { state_ = (state_ ^ static_cast<std::uint32_t>(word)) * kPrime; }
  void add64(std::uint64_t value) {
    add(static_cast<std::int32_t>(static_cast<std::uint32_t>(value)));
    add(static_cast<std::int32_t>(static_cast<std::uint32_t>(value >> 32)));
  }

  std::uint64_t state() const { return state_; }
  std::uint64_t finish() const {
    std::uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }

 private:
  std::uint64_t state_ = 0xcbf29ce484222325ull;  // FNV-1a 64-bit offset basis
};

/// Hash of one block-table row's used entries that can be extended entry by entry: the row is
/// read as pairs of words (lo, hi) -> lo + hi * 2^32, and the hash is sum_k pair_k * kBase^k
/// modulo 2^64. kBase is odd, so every power of it is invertible modulo 2^64 and a change of one
/// entry (a pair change below 2^64) always changes the sum. Appending costs O(new entries),
/// which is what lets the stateful planner fingerprint a batch in O(rows) per step; hashing a
/// whole row runs four independent lanes so the multiplies overlap.
struct RowHash {
  static constexpr std::uint64_t kBase = 0x9e3779b97f4a7c15ull;  // odd (2^64 / golden ratio)
  static constexpr std::uint64_t kBase2 = kBase * kBase;
  static constexpr std::uint64_t kBase3 = kBase2 * kBase;
  static constexpr std::uint64_t kBase4 = kBase2 * kBase2;

  std::uint64_t sum = 0;
  std::uint64_t power = 1;  ///< kBase^(pairs completed)
  std::int64_t count = 0;   ///< entries hashed

  /// Appends the row's next `n` entries (entries count .. count + n - 1 of the row).
  void extend(const std::int32_t* words, std::int64_t n) {
    if (n == 1) {  // a decode step's new block
      if ((count & 1) != 0) {
        sum += (word(words[0]) << 32) * power;
        power *= kBase;
      } else {
        sum += word(words[0]) * power;
      }
      ++count;
      return;
    }
    std::int64_t i = 0;
    if ((count & 1) != 0 && n > 0) {  // complete the half pair
      sum += (word(words[0]) << 32) * power;
      power *= kBase;
      i = 1;
    }
    if (n - i >= 8) {
      std::uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      std::uint64_t p0 = power, p1 = power * kBase, p2 = power * kBase2, p3 = power * kBase3;
      for (; i + 8 <= n; i += 8) {
        s0 += pair(words + i) * p0;
        s1 += pair(words + i + 2) * p1;
        s2 += pair(words + i + 4) * p2;
        s3 += pair(words + i + 6) * p3;
        p0 *= kBase4;
        p1 *= kBase4;
        p2 *= kBase4;
        p3 *= kBase4;
      }
      sum += s0 + s1 + s2 + s3;
      power = p0;
    }
    for (; i + 2 <= n; i += 2) {
      sum += pair(words + i) * power;
      power *= kBase;
    }
    if (i < n) sum += word(words[i]) * power;  // half pair: power moves on when completed
    count += n;
  }

 private:
  static std::uint64_t word(std::int32_t w) { return static_cast<std::uint32_t>(w); }
  static std::uint64_t pair(const std::int32_t* w) { return word(w[0]) | (word(w[1]) << 32); }
};

/// The batch fingerprint from each row's length and RowHash: num_seqs, block_size, then per
/// row its context length and the hash of its used entries (padding and the row stride are
/// ignored). `row_sum(s)` returns row s's RowHash::sum.
/// Rows go round-robin through four hashers (independent multiply chains), folded into the
/// first at the end: a changed value changes one lane, and the fold is injective in each lane.
template <class RowSum>
std::uint64_t fingerprint_of(std::int32_t num_seqs, std::int32_t block_size,
                             const std::int32_t* context_lens, const RowSum& row_sum) {
  WordHasher lanes[4];
  lanes[0].add(num_seqs);
  lanes[0].add(block_size);
  for (std::int32_t s = 0; s < num_seqs; ++s) {
    WordHasher& h = lanes[s & 3];
    h.add(context_lens[s]);
    h.add64(row_sum(s));
  }
  for (int i = 1; i < 4; ++i) lanes[0].add64(lanes[i].state());
  return lanes[0].finish();
}

inline std::uint64_t fingerprint_unchecked(const BatchRows& batch) {
  return fingerprint_of(batch.num_seqs, batch.block_size, batch.context_lens, [&](std::int32_t s) {
    RowHash r;
    r.extend(batch.row(s), used_blocks(batch.context_lens[s], batch.block_size));
    return r.sum;
  });
}

}  // namespace radix_attention::detail
