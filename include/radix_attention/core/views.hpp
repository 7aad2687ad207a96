#pragma once
/// @file
/// Non-owning views (pointer + extents + strides) that the launchers take. Plain C++17: the
/// pointers are device pointers, but nothing here needs CUDA headers.

#include <cstdint>

namespace radix_attention {

/// @brief A paged KV cache: K and V, each [num_blocks, block_size, num_kv_heads, head_dim],
/// row-major ("NHD"), elements of type T (float, __half or __nv_bfloat16), device memory.
/// Element (block, offset, head) of K lives at `k + block * block_stride + offset *
/// token_stride + head * head_stride` (and likewise for V), the head_dim elements of one head
/// contiguous. Strides left at 0 mean NHD: head_stride = head_dim, token_stride = num_kv_heads *
/// head_dim, block_stride = block_size * token_stride. Other layouts through the strides:
///   HND [blocks, heads, block, dim]:     head_stride = block_size * head_dim, token_stride =
///                                        head_dim, block_stride = num_kv_heads * block_size * D;
///   combined [blocks, 2, block, heads, dim]: v = k + block_size * num_kv_heads * head_dim,
///                                        block_stride = 2 * block_size * num_kv_heads * D.
/// Every launcher reads these layouts (strides in multiples of 16 bytes). The decode launchers
/// address a layout other than NHD in int32 units of 16 bytes: its rows must lie within 32 GiB
/// of k and of v (else InvalidArgument). A tensor-parallel rank's kv heads are a view of the
/// full cache: slice_kv_heads (core/head_range.hpp).
template <class T>
struct PagedKvCacheView {
  const T* k = nullptr;
  const T* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::int64_t block_stride = 0;  ///< elements between blocks; 0 = NHD default
  std::int64_t token_stride = 0;  ///< elements between offsets of one block; 0 = NHD default
  std::int64_t head_stride = 0;   ///< elements between kv heads of one token; 0 = NHD default
};

/// The strides of a cache view with the NHD defaults filled in.
struct KvStrides {
  std::int64_t block;
  std::int64_t token;
  std::int64_t head;
};

template <class T>
constexpr KvStrides resolved_strides(const PagedKvCacheView<T>& cache) {
  const std::int64_t head = cache.head_stride != 0 ? cache.head_stride : cache.head_dim;
  const std::int64_t token = cache.token_stride != 0
                                 ? cache.token_stride
                                 : static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim;
  const std::int64_t block = cache.block_stride != 0 ? cache.block_stride
                                                     : static_cast<std::int64_t>(cache.block_size) *
                                                           cache.num_kv_heads * cache.head_dim;
  return {block, token, head};
}

/// True when the view is the dense NHD layout (explicitly or through zero strides).
template <class T>
constexpr bool is_dense_nhd(const PagedKvCacheView<T>& cache) {
  const KvStrides s = resolved_strides(cache);
  return s.head == cache.head_dim &&
         s.token == static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim &&
         s.block == s.token * cache.block_size;
}

/// @brief The writable form of PagedKvCacheView, taken by the cache writers (kv_append,
/// copy_blocks): the same fields with the same meaning (strides included), T* instead of
/// const T*. T may also be __nv_fp8_e4m3 (core/fp8.cuh).
template <class T>
struct PagedKvCacheMutView {
  T* k = nullptr;
  T* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::int64_t block_stride = 0;  ///< elements between blocks; 0 = NHD default
  std::int64_t token_stride = 0;  ///< elements between offsets of one block; 0 = NHD default
  std::int64_t head_stride = 0;   ///< elements between kv heads of one token; 0 = NHD default

  /// The read-only view of the same cache, as the attention launchers take it.
  constexpr PagedKvCacheView<T> as_const() const {
    PagedKvCacheView<T> view{k, v, num_blocks, block_size, num_kv_heads, head_dim};
    view.block_stride = block_stride;
    view.token_stride = token_stride;
    view.head_stride = head_stride;
    return view;
  }
};

template <class T>
constexpr KvStrides resolved_strides(const PagedKvCacheMutView<T>& cache) {
  return resolved_strides(cache.as_const());
}

/// @brief Block tables of a batch, THE block-table type of the library: the launchers take it
/// over device memory, the batch planner and validate_block_tables (cache/) over host memory,
/// and SequenceManager's export (BlockTables::view()) produces it. Token t of sequence s lives
/// in block `block_tables[s * row_stride + t / block_size]` at offset `t % block_size`; a row
/// has max_blocks_per_seq usable entries (the capacity, max_blocks_per_seq * block_size tokens)
/// and rows lie row_stride entries apart (row_stride > max_blocks_per_seq for a column slice of
/// a wider table). Only the first ceil(context_lens[s] / block_size) entries of a row are read.
struct BlockTableView {
  const std::int32_t* block_tables = nullptr;  ///< [num_seqs, row_stride]
  const std::int32_t* context_lens = nullptr;  ///< [num_seqs], each in [0, capacity]
  int num_seqs = 0;
  int max_blocks_per_seq = 0;   ///< usable entries per row; capacity = this * block_size tokens
  std::int64_t row_stride = 0;  ///< entries between rows, >= max_blocks_per_seq
  /// Host-known upper bound of context_lens, or -1 if unknown. When given it is checked against
  /// the capacity and sizes the split-KV plan (else the capacity does).
  int max_context_len = -1;
};

/// @brief The packed query rows of a prefill / extend batch: request s owns rows
/// [qo_indptr[s], qo_indptr[s + 1]) of q and out ([rows, num_q_heads, head_dim], heads
/// contiguous, rows `row_stride` elements apart so q may be a slice of a fused QKV output).
struct PrefillBatchView {
  const std::int32_t* qo_indptr = nullptr;  ///< device [num_seqs + 1], non-decreasing, from 0
  int total_q = 0;                          ///< host-known qo_indptr[num_seqs]: rows of q and out
  int max_q_len = 0;  ///< host-known upper bound of every request's row count (sizes the grid)
  std::int64_t q_row_stride = 0;    ///< elements between rows of q; 0 = num_q_heads * head_dim
  std::int64_t out_row_stride = 0;  ///< elements between rows of out; 0 = num_q_heads * head_dim
};

}  // namespace radix_attention
