#pragma once
/// @file
/// Paged prefill on CUDA cores, for float inputs (kept in full precision; correct, not fast):
/// one warp per row (query row x query head). Each lane scores one key of a 32-key step, the
/// warp updates its online softmax with CUB reductions, then every lane accumulates its
/// head_dim / 32 output columns over the step's keys.

#include <cuda_runtime.h>
#include <cub/warp/warp_reduce.cuh>
#include <cuda/functional>

#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"
#include "radix_attention/kernels/detail/row_results.cuh"

namespace radix_attention::detail {

struct PrefillSimtTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps;  ///< rows per CTA: one per warp
};

template <int HEAD_DIM>
__global__ void __launch_bounds__(PrefillSimtTraits::kThreads)
    paged_prefill_simt_kernel(const PagedPrefillParams<float> p) {
  constexpr int kCols = HEAD_DIM / 32;  // output columns per lane
  using WarpReduce = cub::WarpReduce<float>;
  __shared__ typename WarpReduce::TempStorage reduce_storage[PrefillSimtTraits::kWarps];
  __shared__ __align__(16) float q_rows[PrefillSimtTraits::kWarps][HEAD_DIM];
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const PrefillTile cta =
      prefill_tile(p, blockIdx.z, blockIdx.y, static_cast<int>(gridDim.x - 1 - blockIdx.x),
                   PrefillSimtTraits::kRows);
  if (warp >= cta.rows) return;  // whole warps leave: no CTA-wide barrier follows
  const long long q_offset = prefill_row_offset(cta, warp, p.group_size, p.q_row_stride, HEAD_DIM);
  for (int d = lane; d < HEAD_DIM; d += 32) q_rows[warp][d] = p.q[q_offset + d] * p.scale_log2;
  __syncwarp();
  const int fr = cta.row0 + warp;
  const int qi = fr / p.group_size;
  const int limit = prefill_key_limit(p, cta, qi);
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(cta.seq) * p.table_stride;

  float m = -INFINITY, l = 0.f, o[kCols];
#pragma unroll
  for (int k = 0; k < kCols; ++k) o[k] = 0.f;
  for (int base = 0; base < limit; base += 32) {
    const long long offset =
        kv_token_offset(table_row, base + lane, limit, p.block_size, p.layout, cta.kv_head);
    float score = -INFINITY;
    if (offset >= 0) {
      float dot = 0.f;
#pragma unroll 4
      for (int d = 0; d < HEAD_DIM; d += 4) {
        const float4 k4 = *reinterpret_cast<const float4*>(p.k_cache + offset + d);
        const float4 q4 = *reinterpret_cast<const float4*>(&q_rows[warp][d]);
        dot = fmaf(q4.x, k4.x, fmaf(q4.y, k4.y, fmaf(q4.z, k4.z, fmaf(q4.w, k4.w, dot))));
      }
      score = dot;
    }
    const float step_max = __shfl_sync(
        0xffffffffu, WarpReduce(reduce_storage[warp]).Reduce(score, cuda::maximum<>{}), 0);
    const float m_new = fmaxf(m, step_max);  // finite: the step has at least one key
    const float alpha = exp2f(m - m_new);
    const float weight = offset >= 0 ? exp2f(score - m_new) : 0.f;
    __syncwarp();
    l = l * alpha + __shfl_sync(0xffffffffu, WarpReduce(reduce_storage[warp]).Sum(weight), 0);
    m = m_new;
#pragma unroll
    for (int k = 0; k < kCols; ++k) o[k] *= alpha;
    const int keys = min(32, limit - base);
    for (int j = 0; j < keys; ++j) {
      const float w = __shfl_sync(0xffffffffu, weight, j);
      const long long v_offset = __shfl_sync(0xffffffffu, offset, j);
#pragma unroll
      for (int k = 0; k < kCols; ++k) o[k] = fmaf(w, p.v_cache[v_offset + lane * kCols + k], o[k]);
    }
    __syncwarp();
  }

  const float inv = l > 0.f ? 1.f / l : 0.f;
  const long long out_offset =
      prefill_row_offset(cta, warp, p.group_size, p.out_row_stride, HEAD_DIM);
#pragma unroll
  for (int k = 0; k < kCols; ++k) p.out[out_offset + lane * kCols + k] = o[k] * inv;
  if (p.lse != nullptr && lane == 0) {
    const int head = cta.kv_head * p.group_size + (fr - qi * p.group_size);
    p.lse[static_cast<long long>(cta.q_begin + qi) * p.num_q_heads + head] = natural_lse(m, l);
  }
}

}  // namespace radix_attention::detail
