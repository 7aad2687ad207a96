#pragma once
/// @file
/// Head ranges of tensor parallelism: which query and kv heads rank r of t attends, and the
/// cache view of a kv-head range. Plain C++17 (no CUDA headers).
///
/// With strided views, a rank's attention is a view of the full tensors: q and out offset to
/// the rank's first query head with the full row stride, the cache sliced to its kv heads with
/// the full cache's strides. On one GPU the ranks' launches then write disjoint head ranges of
/// one output; on t GPUs each rank owns only its slices and the engine's all-reduce after the
/// output projection combines them. Every rank runs the same radix plan (same sequences, same
/// planner), uploaded with the rank's group size q.count / kv.count.
/// @code
///   const auto heads = radix_attention::tensor_parallel_heads(32, 8, /*tp_size=*/4, rank);
///   auto cache = radix_attention::slice_kv_heads(full_cache, heads.kv.first, heads.kv.count);
///   radix_attention::RadixDecodeOptions o;
///   o.q_row_stride = o.out_row_stride = 32 * head_dim;
///   radix_attention::radix_decode(q + heads.q.first * head_dim, heads.q.count, cache, tables,
///                                 plan, out + heads.q.first * head_dim, ...);
/// @endcode

#include <cstdint>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention {

/// Heads [first, first + count).
struct HeadRange {
  int first = 0;
  int count = 0;
};

/// The heads of one tensor-parallel rank.
struct TensorParallelHeads {
  HeadRange q;   ///< query heads, num_q_heads / tp_size of them
  HeadRange kv;  ///< kv heads: num_kv_heads / tp_size, or 1 shared by tp_size / num_kv_heads ranks
  int replicas = 1;  ///< ranks that hold each kv head (1 unless tp_size > num_kv_heads)
};

/**
 * @brief Query and kv heads of rank `rank` among `tp_size` ranks, as tensor-parallel engines
 * shard attention: contiguous query heads split evenly; kv heads split evenly when tp_size <=
 * num_kv_heads, else each kv head replicated on tp_size / num_kv_heads consecutive ranks (the
 * ranks of its query heads). Query head h of the rank uses local kv head (h - q.first) /
 * (q.count / kv.count), as the unsharded model's h / (num_q_heads / num_kv_heads).
 * @throw InvalidArgument unless num_kv_heads >= 1, num_q_heads a multiple of num_kv_heads and
 *        of tp_size, tp_size >= 1 dividing num_kv_heads or a multiple of it, 0 <= rank < tp_size.
 */
inline TensorParallelHeads tensor_parallel_heads(int num_q_heads, int num_kv_heads, int tp_size,
                                                 int rank) {
  expects(num_kv_heads >= 1, "num_kv_heads", num_kv_heads, "must be >= 1");
  expects(num_q_heads >= 1 && num_q_heads % num_kv_heads == 0, "num_q_heads", num_q_heads,
          "must be a positive multiple of num_kv_heads");
  expects(tp_size >= 1, "tp_size", tp_size, "must be >= 1");
  expects_that(num_q_heads % tp_size == 0, "num_q_heads = ", num_q_heads,
               " must be a multiple of tp_size = ", tp_size);
  expects_that(num_kv_heads % tp_size == 0 || tp_size % num_kv_heads == 0, "tp_size = ", tp_size,
               " must divide num_kv_heads = ", num_kv_heads, " or be a multiple of it");
  expects(rank >= 0 && rank < tp_size, "rank", rank, "must be in [0, tp_size)");
  TensorParallelHeads h;
  h.q.count = num_q_heads / tp_size;
  h.q.first = rank * h.q.count;
  if (tp_size <= num_kv_heads) {
    h.kv.count = num_kv_heads / tp_size;
    h.kv.first = rank * h.kv.count;
  } else {
    h.replicas = tp_size / num_kv_heads;
    h.kv.count = 1;
    h.kv.first = rank / h.replicas;
  }
  return h;
}

namespace detail {

template <class View>
View sliced_kv_heads(const View& cache, int first, int count) {
  expects(first >= 0 && first < cache.num_kv_heads, "first", first,
          "must be in [0, cache.num_kv_heads)");
  expects(count >= 1 && count <= cache.num_kv_heads - first, "count", count,
          "must be >= 1 and first + count <= cache.num_kv_heads");
  const KvStrides s = resolved_strides(cache);
  View slice = cache;
  const std::int64_t offset = first * s.head;
  slice.k = cache.k == nullptr ? nullptr : cache.k + offset;
  slice.v = cache.v == nullptr ? nullptr : cache.v + offset;
  slice.num_kv_heads = count;
  // Explicit strides: the defaults of the slice (from its own num_kv_heads) would be wrong.
  slice.block_stride = s.block;
  slice.token_stride = s.token;
  slice.head_stride = s.head;
  return slice;
}

}  // namespace detail

/**
 * @brief The view of kv heads [first, first + count) of `cache`: k and v offset to head
 * `first`, num_kv_heads = count, the full cache's strides (resolved, so never the slice's own
 * defaults). Pointers are only offset, never read.
 * @throw InvalidArgument unless 0 <= first, 1 <= count and first + count <= cache.num_kv_heads.
 */
template <class T>
PagedKvCacheView<T> slice_kv_heads(const PagedKvCacheView<T>& cache, int first, int count) {
  return detail::sliced_kv_heads(cache, first, count);
}

/// @brief slice_kv_heads of a writable view (a rank's kv_append into its heads of a full cache).
template <class T>
PagedKvCacheMutView<T> slice_kv_heads(const PagedKvCacheMutView<T>& cache, int first, int count) {
  return detail::sliced_kv_heads(cache, first, count);
}

}  // namespace radix_attention
