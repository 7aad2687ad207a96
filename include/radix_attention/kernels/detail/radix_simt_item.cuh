#pragma once
/// @file
/// The CUDA-core decode mainloop, for float inputs (full precision; tensor cores would round
/// the operands): one unit (a radix work item or a paged-decode CTA's rows, see
/// decode_rows.cuh) over one token range. One warp per row: each lane owns HEAD_DIM / 32
/// dimensions, a warp reduction forms each score, and the online softmax runs in registers.
/// Rows of one unit re-read the range's KV through L1/L2; this path favours exactness over speed.

#include <cuda_runtime.h>

#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/decode_rows.cuh"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM, class Params, class Rows>
__device__ __forceinline__ void radix_simt_item(const Params& p, const DecodeSpan& span,
                                                const Rows& unit_rows, int kv_head) {
  constexpr int kPerLane = HEAD_DIM / 32;
  static_assert(HEAD_DIM % 32 == 0, "each lane owns HEAD_DIM / 32 dimensions");
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int begin = span.begin;
  const int end = span.end;
  const std::int32_t* table_row = span.table_row;

  for (int row = warp; row < unit_rows.rows; row += RadixSimtTraits::kWarps) {
    const T* q = p.q + unit_rows.q_offset(row);
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
      const int slot = table_entry_slot(load_table_entry(table_row, t, end, p.block_size), t, end,
                                        p.block_size, p.kv);
      const std::int64_t base = kv_slot_offset(p.kv, slot, kv_head);
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
    const std::int64_t target = unit_rows.target(row);
    // A unit without tokens (an empty context or split) stores zeros and LSE -inf.
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const float one[1] = {acc[i] * inv};
      unit_rows.template store<1>(target, lane + 32 * i, one);
    }
    if (lane == 0) {
      unit_rows.store_lse(target, natural_lse(m, l));
    }
  }
}

}  // namespace radix_attention::detail
