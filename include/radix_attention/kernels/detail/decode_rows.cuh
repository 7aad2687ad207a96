#pragma once
/// @file
/// Where the rows of one decode work unit come from and where their results go. A unit is up
/// to 64 rows (query x query-head pairs of one kv head) attending to one token range of one
/// block-table row; the decode mainloops (radix_mma_item, radix_simt_item) are written against
/// the interface below, so a radix plan's work item and a paged-decode CTA run the same code:
///
///   q_offset(row)               element offset of the row's query vector in q; -1 past the rows
///   target(row)                 an index naming the row's destination for the stores; -1 past
///   store<N>(target, d, v)      N (1, 2 or 4) consecutive output dims d .. d + N - 1
///   store_lse(target, lse)      the row's natural-log log-sum-exp over the unit's tokens
///
/// Results are normalised (divided by the row's softmax sum); a unit that saw no token stores
/// zeros and an LSE of -inf, which merge_states weighs as nothing.

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/row_results.cuh"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention::detail {

/// The token range a unit attends to: tokens [begin, end) of block-table row `table_row`.
struct DecodeSpan {
  const std::int32_t* table_row;
  int begin;
  int end;
};

/// Row `row` of a radix work item: its partial id and query head (-1, -1 past the tile).
struct RadixRow {
  int partial;
  int q_head;
};

__device__ __forceinline__ RadixRow radix_row(const RadixPlanView& plan, int query_base,
                                              int row_begin, int rows, int row, int group_size,
                                              int kv_head) {
  if (row >= rows) return {-1, -1};
  const int r = row_begin + row;
  const int slot = r / group_size;
  return {query_base + slot, kv_head * group_size + (r - slot * group_size)};
}

/// The rows of a radix plan's work item: row r is row row_begin + r of its chunk (the chunk's
/// queries x the kv head's group); results are float partial states, merged per query later.
template <int HEAD_DIM>
struct RadixItemRows {
  const RadixPlanView* plan;
  int query_base;
  int row_begin;
  int rows;
  int group_size;
  int kv_head;
  int num_q_heads;
  std::int64_t q_row_stride;
  float* partial_out;  ///< [num_partials, num_q_heads, HEAD_DIM]
  float* partial_lse;  ///< [num_partials, num_q_heads]

  __device__ RadixRow row_of(int row) const {
    return radix_row(*plan, query_base, row_begin, rows, row, group_size, kv_head);
  }
  __device__ std::int64_t q_offset(int row) const {
    const RadixRow rr = row_of(row);
    if (rr.partial < 0) return -1;
    const int query = __ldg(plan->chunk_queries + rr.partial);
    return static_cast<std::int64_t>(query) * q_row_stride +
           static_cast<std::int64_t>(rr.q_head) * HEAD_DIM;
  }
  __device__ std::int64_t target(int row) const {
    const RadixRow rr = row_of(row);
    return rr.partial < 0 ? -1 : static_cast<std::int64_t>(rr.partial) * num_q_heads + rr.q_head;
  }
  template <int N>
  __device__ void store(std::int64_t t, int d, const float (&v)[N]) const {
    store_row_elems<float, N>(partial_out + t * HEAD_DIM + d, v);
  }
  __device__ void store_lse(std::int64_t t, float lse) const { partial_lse[t] = lse; }
};

/// The rows of a paged-decode unit: `rows` consecutive query heads of one sequence. Without
/// split-KV the results are the final output (T, rows out_row_stride apart) and the optional
/// LSE; with it, the split's float partial state.
template <class T, int HEAD_DIM>
struct PagedSeqRows {
  std::int64_t q_base;  ///< element offset of the first row's query vector
  int rows;
  T* out;              ///< the first row's output (final), or nullptr when splitting
  float* lse;          ///< the first row's LSE (final, optional), else nullptr
  float* partial_out;  ///< the first row's partial output (splitting), else nullptr
  float* partial_lse;

  __device__ std::int64_t q_offset(int row) const {
    return row < rows ? q_base + static_cast<std::int64_t>(row) * HEAD_DIM : -1;
  }
  __device__ std::int64_t target(int row) const { return row < rows ? row : -1; }
  template <int N>
  __device__ void store(std::int64_t t, int d, const float (&v)[N]) const {
    if (partial_out != nullptr) {
      store_row_elems<float, N>(partial_out + t * HEAD_DIM + d, v);
    } else {
      store_row_elems<T, N>(out + t * HEAD_DIM + d, v);
    }
  }
  __device__ void store_lse(std::int64_t t, float value) const {
    if (partial_lse != nullptr) {
      partial_lse[t] = value;
    } else if (lse != nullptr) {
      lse[t] = value;
    }
  }
};

}  // namespace radix_attention::detail
