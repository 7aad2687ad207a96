#pragma once
/// @file
/// One work item of the CUDA-core radix kernel, for float inputs (full precision; tensor cores
/// would round the operands). One warp per row: each lane owns HEAD_DIM / 32 dimensions, a
/// warp reduction forms each score, and the online softmax runs in registers. Rows of one item
/// re-read the chunk's KV through L1/L2; this path favours exactness over speed.

#include <cuda_runtime.h>

#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_simt_item(const RadixKernelParams<T>& p, const RadixItem& it,
                                                int kv_head) {
  constexpr int kPerLane = HEAD_DIM / 32;
  static_assert(HEAD_DIM % 32 == 0, "each lane owns HEAD_DIM / 32 dimensions");
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int query_base = it.query_base;
  const int begin = it.begin;
  const int end = it.end;
  const int row_begin = it.row_begin;
  const int rows = it.rows;
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(it.table_row) * p.block_table_stride;

  for (int row = warp; row < rows; row += RadixSimtTraits::kWarps) {
    const int r = row_begin + row;
    const int slot_in_chunk = r / p.group_size;
    const int partial = query_base + slot_in_chunk;
    const int q_head = kv_head * p.group_size + (r - slot_in_chunk * p.group_size);
    const int query = p.plan.chunk_queries[partial];
    const T* q = p.q + static_cast<std::int64_t>(query) * p.q_row_stride +
                 static_cast<std::int64_t>(q_head) * HEAD_DIM;
    float qv[kPerLane];
    float acc[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      qv[i] = DTypeTraits<T>::to_float(q[lane + 32 * i]);
      acc[i] = 0.f;
    }
    float m = -INFINITY;
    float l = 0.f;
    for (int t = begin; t < end; ++t) {
      const std::int64_t base = kv_slot_offset(
          p.kv, kv_slot(p.kv, table_row[t / p.block_size], t % p.block_size), kv_head);
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        dot = fmaf(qv[i], DTypeTraits<T>::to_float(p.k_cache[base + lane + 32 * i]), dot);
      }
#pragma unroll
      for (int off = 16; off > 0; off /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, off);
      const float s = dot * p.scale_log2;
      const float m_new = fmaxf(m, s);
      const float alpha = exp2f(m - m_new);
      const float w = exp2f(s - m_new);
      l = l * alpha + w;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) {
        acc[i] = fmaf(w, DTypeTraits<T>::to_float(p.v_cache[base + lane + 32 * i]), acc[i] * alpha);
      }
      m = m_new;
    }
    const std::int64_t row_index = static_cast<std::int64_t>(partial) * p.num_q_heads + q_head;
    const float inv = 1.f / l;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      p.partial_out[row_index * HEAD_DIM + lane + 32 * i] = acc[i] * inv;
    }
    if (lane == 0) p.partial_lse[row_index] = (m + log2f(l)) * 0.6931471805599453f;
  }
}

}  // namespace radix_attention::detail
