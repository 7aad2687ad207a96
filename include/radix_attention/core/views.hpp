#pragma once
/// @file
/// Non-owning views (pointer + extents + strides) that the launchers take. Plain C++17: the
/// pointers are device pointers, but nothing here needs CUDA headers.

#include <cstdint>

namespace radix_attention {

/// @brief A paged KV cache: K and V, each [num_blocks, block_size, num_kv_heads, head_dim],
/// row-major ("NHD"), elements of type T (float, __half or __nv_bfloat16), device memory.
template <class T>
struct PagedKvCacheView {
  const T* k = nullptr;
  const T* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

/// @brief Block tables of a batch (device memory): token t of sequence s lives in block
/// `block_tables[s * row_stride + t / block_size]` at offset `t % block_size`.
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

}  // namespace radix_attention
