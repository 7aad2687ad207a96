#pragma once
/// @file
/// The CUDA-core decode mainloop, for float inputs (full precision; tensor cores would round
/// the operands): one unit (a radix work item or a paged-decode CTA's rows, see
/// decode_rows.cuh) over one token range. One warp per row: each lane owns HEAD_DIM / 32
/// dimensions (16-byte runs where they allow), a warp reduction forms each score, and the
/// online softmax runs in registers. Rows of one unit re-read the range's KV through L1/L2.
///
/// Tokens go kTokens at a time: their K and V rows are loaded together, their scores reduced
/// together and the softmax state rescaled once per step, so a warp has kTokens rows of loads
/// in flight instead of one token's dependent chain (block table -> K -> score -> V). The
/// block-table entries of the next step are read one step ahead, by the step's first lanes.

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/decode_rows.cuh"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"
#include "radix_attention/kernels/detail/row_results.cuh"

namespace radix_attention::detail {

/// Elements of one lane's run of a row: 4 (a 16-byte float4) where HEAD_DIM / 32 allows, else 2
/// or 1. Lane `lane`'s run `c` covers dims c * 32 * kVec + lane * kVec ... + kVec - 1, so each
/// run's load is one contiguous 32 * kVec-element stretch of the row over the warp.
template <int HEAD_DIM>
inline constexpr int kSimtVec = (HEAD_DIM / 32) % 4 == 0   ? 4
                                : (HEAD_DIM / 32) % 2 == 0 ? 2
                                                           : 1;

template <int VEC>
__device__ __forceinline__ void load_simt_run(const float* __restrict__ src, float* dst) {
  if constexpr (VEC == 4) {
    const float4 x = __ldg(reinterpret_cast<const float4*>(src));
    dst[0] = x.x;
    dst[1] = x.y;
    dst[2] = x.z;
    dst[3] = x.w;
  } else if constexpr (VEC == 2) {
    const float2 x = __ldg(reinterpret_cast<const float2*>(src));
    dst[0] = x.x;
    dst[1] = x.y;
  } else {
    dst[0] = __ldg(src);
  }
}

template <class T, int HEAD_DIM, class Params, class Rows>
__device__ __forceinline__ void radix_simt_item(const Params& p, const DecodeSpan& span,
                                                const Rows& unit_rows, int kv_head) {
  static_assert(std::is_same_v<T, float>, "the CUDA-core mainloop reads float queries and caches");
  static_assert(HEAD_DIM % 32 == 0, "each lane owns HEAD_DIM / 32 dimensions");
  constexpr int kPerLane = HEAD_DIM / 32;
  constexpr int kVec = kSimtVec<HEAD_DIM>;
  constexpr int kRuns = kPerLane / kVec;
  // Tokens per step: K and V of kTokens rows in registers (2 x kTokens x kPerLane floats).
  constexpr int kTokens = HEAD_DIM <= 128 ? 8 : 4;
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int begin = span.begin;
  const int end = span.end;
  const int block_size = p.block_size;
  const std::int32_t* table_row = span.table_row;
  auto dim_of = [&](int c) { return c * 32 * kVec + lane * kVec; };

  for (int row = warp; row < unit_rows.rows; row += RadixSimtTraits::kWarps) {
    const float* q = p.q + unit_rows.q_offset(row);
    float qv[kPerLane];
    float acc[kPerLane];
#pragma unroll
    for (int c = 0; c < kRuns; ++c) load_simt_run<kVec>(q + dim_of(c), qv + c * kVec);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[i] = 0.f;
    float m = -INFINITY;
    float l = 0.f;
    // Lane j < kTokens holds the block id of token t + j of the coming step.
    int next_block =
        lane < kTokens ? load_table_entry(table_row, begin + lane, end, block_size) : -1;
    for (int t = begin; t < end; t += kTokens) {
      const int my_slot =
          lane < kTokens ? table_entry_slot(next_block, t + lane, end, block_size, p.kv) : -1;
      if (lane < kTokens) {
        next_block = load_table_entry(table_row, t + kTokens + lane, end, block_size);
      }
      float kr[kTokens][kPerLane];
      float vr[kTokens][kPerLane];
      int slot[kTokens];
#pragma unroll
      for (int j = 0; j < kTokens; ++j) {
        slot[j] = __shfl_sync(0xffffffffu, my_slot, j);
        if (slot[j] >= 0) {
          const std::int64_t base = kv_slot_offset(p.kv, slot[j], kv_head);
#pragma unroll
          for (int c = 0; c < kRuns; ++c) {
            load_simt_run<kVec>(p.k_cache + base + dim_of(c), kr[j] + c * kVec);
            load_simt_run<kVec>(p.v_cache + base + dim_of(c), vr[j] + c * kVec);
          }
        } else {
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) kr[j][i] = vr[j][i] = 0.f;
        }
      }
      float score[kTokens];
#pragma unroll
      for (int j = 0; j < kTokens; ++j) {
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) dot = fmaf(qv[i], kr[j][i], dot);
        score[j] = dot;
      }
#pragma unroll
      for (int off = 16; off > 0; off /= 2) {
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          score[j] += __shfl_xor_sync(0xffffffffu, score[j], off);
        }
      }
      // Token t is below end, so every step has a score and m_new is finite.
      float m_new = m;
#pragma unroll
      for (int j = 0; j < kTokens; ++j) {
        score[j] = slot[j] >= 0 ? score[j] * p.scale_log2 : -INFINITY;
        m_new = fmaxf(m_new, score[j]);
      }
      const float alpha = exp2f(m - m_new);  // 0 on the first step (m = -inf)
      l *= alpha;
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) acc[i] *= alpha;
#pragma unroll
      for (int j = 0; j < kTokens; ++j) {
        const float w = exp2f(score[j] - m_new);  // 0 for tokens past end
        l += w;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[i] = fmaf(w, vr[j][i], acc[i]);
      }
      m = m_new;
    }
    const std::int64_t target = unit_rows.target(row);
    // A unit without tokens (an empty context or split) stores zeros and LSE -inf.
    const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
    for (int c = 0; c < kRuns; ++c) {
      float run[kVec];
#pragma unroll
      for (int e = 0; e < kVec; ++e) run[e] = acc[c * kVec + e] * inv;
      unit_rows.template store<kVec>(target, dim_of(c), run);
    }
    if (lane == 0) unit_rows.store_lse(target, natural_lse(m, l));
  }
}

}  // namespace radix_attention::detail
