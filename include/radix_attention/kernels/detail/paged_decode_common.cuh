#pragma once
/// @file
/// Pieces of the paged decode kernels: the device-side parameter block and the split of a
/// sequence's context among CTAs.

#include <cmath>
#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"
#include "radix_attention/kernels/detail/pdl.cuh"

namespace radix_attention {

/// @brief Device-side arguments of the paged decode kernels (built by ops/paged_decode.cuh).
/// T is the query / output type, TKv the cache element type (T, or __nv_fp8_e4m3 with scales).
template <class T, class TKv = T>
struct PagedDecodeParams {
  const T* q;          ///< [num_seqs rows (q_row_stride apart), num_q_heads, head_dim]
  const TKv* k_cache;  ///< [num_blocks, block_size, num_kv_heads, head_dim] through `kv`
  const TKv* v_cache;
  const std::int32_t* block_tables;  ///< [num_seqs, row_stride]
  const std::int32_t* context_lens;  ///< [num_seqs]
  T* out;              ///< [num_seqs rows (out_row_stride apart), num_q_heads, head_dim] (1 split)
  float* lse;          ///< [num_seqs, num_q_heads] natural log (dense), or nullptr
  float* partial_out;  ///< [num_seqs * num_splits, num_q_heads, head_dim] (num_splits > 1)
  float* partial_lse;  ///< [num_seqs * num_splits, num_q_heads]
  std::int64_t block_table_stride;
  std::int64_t q_row_stride;    ///< elements between rows of q
  std::int64_t out_row_stride;  ///< elements between rows of out
  detail::KvSlotCode kv;        ///< K/V row addressing (kernels/detail/kv_slot_code.cuh)
  int block_size;
  int max_blocks_per_seq;
  int num_q_heads;
  int num_kv_heads;
  int group_size;   ///< num_q_heads / num_kv_heads
  int head_chunks;  ///< CTAs along one group: ceil(group_size / kPagedDecodeRowsPerCta)
  int num_splits;
  float scale_log2;  ///< softmax scale * log2(e): scores live in the base-2 domain in-kernel
  const float* k_scale = nullptr;  ///< fp8 cache: dequantisation scales (core/kv_scales.hpp)
  const float* v_scale = nullptr;
  int scale_head_step = 0;  ///< 0: one scale per tensor, 1: one per kv head
};

namespace detail {

/// Token range [begin, end) of split `split` of a context of `ctx` tokens. Ranges are multiples
/// of `align` tokens (the kernel's tile) so that only a split's last tile is partial.
__device__ __forceinline__ void split_range(int ctx, int split, int num_splits, int align,
                                            int& begin, int& end) {
  int chunk = (ctx + num_splits - 1) / num_splits;
  chunk = (chunk + align - 1) / align * align;
  begin = min(split * chunk, ctx);
  end = min(begin + chunk, ctx);
}

/// Context length of `seq`, checked against the table's capacity in bounds-check builds.
template <class T, class TKv>
__device__ __forceinline__ int context_length(const PagedDecodeParams<T, TKv>& p, int seq) {
  const int ctx = p.context_lens[seq];
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(ctx >= 0 && static_cast<long long>(ctx) <=
                                                      static_cast<long long>(p.max_blocks_per_seq) *
                                                          p.block_size);
  return ctx;
}

}  // namespace detail
}  // namespace radix_attention
