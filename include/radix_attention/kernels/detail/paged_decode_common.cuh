#pragma once
/// @file
/// Pieces shared by the paged decode kernels: the device-side parameter block, the split of a
/// sequence's context among CTAs, block-table lookup, and the epilogue that merges the per-warp
/// softmax states of one CTA and writes the final row (or a split-KV partial state).

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
  int num_blocks;
  int block_size;
  int max_blocks_per_seq;
  int num_q_heads;
  int num_kv_heads;
  int group_size;   ///< num_q_heads / num_kv_heads
  int head_chunks;  ///< CTAs along one group: ceil(group_size / rows per CTA)
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

/// Slot (kv_slot) of token `token` given its block id; kv_slot_offset gives its rows.
template <class T, class TKv>
__device__ __forceinline__ int token_slot(const PagedDecodeParams<T, TKv>& p, int block,
                                          int token) {
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(block >= 0 && block < p.num_blocks);
  return kv_slot(p.kv, block, token % p.block_size);
}

/// Per-row statistics of the epilogue (small; the per-warp output rows live elsewhere).
template <int kWarps, int kRows>
struct EpilogueStats {
  float max[kWarps][kRows];     ///< per-warp running max (base-2 domain)
  float sum[kWarps][kRows];     ///< per-warp sum of exp2(score - max)
  float weight[kWarps][kRows];  ///< exp2(max_w - M) / total sum
  float lse[kRows];             ///< natural-log LSE of the CTA's range
};

/// Scratch of the epilogue when it can have one region: output rows + statistics.
template <int kWarps, int kRows, int D>
struct EpilogueSmem {
  float out[kWarps][kRows][D];  ///< unnormalised per-warp output rows
  EpilogueStats<kWarps, kRows> stats;
};

/// Combines the per-warp states (`out`, `s` already written, followed by a barrier) and stores
/// rows [0, rows) of one work item: the final output (T) + LSE when num_splits == 1, else the
/// float partial state of split `split`. An item that saw no token writes zeros and LSE = -inf.
/// Ends with a barrier, so the scratch may be reused right after.
template <class T, int kWarps, int kRows, int D, int kThreads, class TKv>
__device__ void combine_warps_and_store(const float (*out)[kRows][D],
                                        EpilogueStats<kWarps, kRows>& s,
                                        const PagedDecodeParams<T, TKv>& p, int seq, int split,
                                        int head0, int rows) {
  const int tid = threadIdx.x;
  if (tid < kRows) {
    float m = -INFINITY;
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s.max[w][tid]);
    float total = 0.f;
    float scale[kWarps];
    for (int w = 0; w < kWarps; ++w) {
      scale[w] = s.max[w][tid] == -INFINITY ? 0.f : exp2f(s.max[w][tid] - m);
      total += s.sum[w][tid] * scale[w];
    }
    const float inv = total > 0.f ? 1.f / total : 0.f;
    for (int w = 0; w < kWarps; ++w) s.weight[w][tid] = scale[w] * inv;
    s.lse[tid] = total > 0.f ? (m + log2f(total)) * 0.69314718055994531f : -INFINITY;
  }
  __syncthreads();
  const bool partial = p.num_splits > 1;
  const long long row0 =
      partial ? (static_cast<long long>(seq) * p.num_splits + split) * p.num_q_heads + head0
              : static_cast<long long>(seq) * p.num_q_heads + head0;
  // The final output's rows are out_row_stride apart (the partials and LSEs are dense).
  T* const out_rows =
      p.out + static_cast<long long>(seq) * p.out_row_stride + static_cast<long long>(head0) * D;
  for (int i = tid; i < rows * D; i += kThreads) {
    const int r = i / D;
    const int d = i % D;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) o += out[w][r][d] * s.weight[w][r];
    if (partial) {
      p.partial_out[(row0 + r) * D + d] = o;
    } else {
      out_rows[r * D + d] = DTypeTraits<T>::from_float(o);
    }
  }
  if (tid < rows) {
    if (partial) {
      p.partial_lse[row0 + tid] = s.lse[tid];
    } else if (p.lse != nullptr) {
      p.lse[row0 + tid] = s.lse[tid];
    }
  }
  __syncthreads();
}

}  // namespace detail
}  // namespace radix_attention
