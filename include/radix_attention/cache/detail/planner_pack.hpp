#pragma once
/// @file
/// Packing of a RadixPlan into one flat int32 buffer (included by cache/radix_plan.hpp; not a
/// public header). The layout is documented on PackedRadixPlan.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

struct RadixPlan;

/// @brief The arrays of a packed plan, in buffer order. Their values are the indices of
/// PackedPlanLayout::offset / size and of the header's offset table. New (derived) arrays are
/// only ever appended before `count`, so an index, once published, keeps its meaning.
enum class PlanArray : std::int32_t {
  chunk_row = 0,
  chunk_token_begin,
  chunk_token_end,
  chunk_query_indptr,
  chunk_queries,
  query_partial_indptr,
  query_partials,
  chunk_segment,
  count  ///< number of arrays, not an array
};

inline constexpr std::int32_t kNumPlanArrays = static_cast<std::int32_t>(PlanArray::count);

/// First word of every packed plan: the bytes "RPLN" read as a little-endian int32. A kernel or
/// launcher that finds anything else was handed something that is not a packed plan.
inline constexpr std::int32_t kPackedPlanMagic = 0x4E4C5052;
/// Layout version; bumped only if existing header words change meaning (appending arrays does
/// not bump it: num_arrays says how many offsets follow).
inline constexpr std::int32_t kPackedPlanVersion = 1;
/// Every array starts at a multiple of 4 words (16 bytes), so device code may use 16-byte loads.
inline constexpr std::int32_t kPackedPlanAlignWords = 4;

/// Fixed header words (indices into the packed buffer).
enum PackedPlanWord : std::int32_t {
  kPackedWordMagic = 0,          ///< kPackedPlanMagic
  kPackedWordVersion = 1,        ///< kPackedPlanVersion
  kPackedWordHeaderWords = 2,    ///< words before the first array (a multiple of 4)
  kPackedWordNumArrays = 3,      ///< A = number of arrays (kNumPlanArrays when packed)
  kPackedWordNumQueries = 4,     ///< plan.num_queries
  kPackedWordNumChunks = 5,      ///< plan.num_chunks()
  kPackedWordNumPartials = 6,    ///< plan.num_partials()
  kPackedWordNumSegments = 7,    ///< plan.num_segments
  kPackedWordFingerprintLo = 8,  ///< low 32 bits of plan.batch_fingerprint
  kPackedWordFingerprintHi = 9,  ///< high 32 bits
  kPackedWordTotalWords = 10,    ///< total words of the buffer, header included
  kPackedWordOffsets = 11        ///< A words: offset (in words) of array i; then A words: its size
};

/// @brief Where each array of a packed plan lies, in int32 words from the buffer's start.
struct PackedPlanLayout {
  std::int32_t header_words = 0;
  std::int32_t total_words = 0;
  std::array<std::int32_t, kNumPlanArrays> offset{};
  std::array<std::int32_t, kNumPlanArrays> size{};

  std::int32_t offset_of(PlanArray a) const { return offset[static_cast<std::size_t>(a)]; }
  std::int32_t size_of(PlanArray a) const { return size[static_cast<std::size_t>(a)]; }
};

namespace detail {

constexpr std::int64_t align_up_words(std::int64_t n) {
  return (n + kPackedPlanAlignWords - 1) / kPackedPlanAlignWords * kPackedPlanAlignWords;
}

inline std::int32_t packed_header_words() {
  return static_cast<std::int32_t>(align_up_words(kPackedWordOffsets + 2 * kNumPlanArrays));
}

// The arrays in PlanArray order, so packing, unpacking and the layout walk one list.
template <class Plan>
auto plan_arrays(Plan& plan) {
  return std::array<decltype(&plan.chunk_row), kNumPlanArrays>{
      &plan.chunk_row,          &plan.chunk_token_begin, &plan.chunk_token_end,
      &plan.chunk_query_indptr, &plan.chunk_queries,     &plan.query_partial_indptr,
      &plan.query_partials,     &plan.chunk_segment};
}

}  // namespace detail
}  // namespace radix_attention
