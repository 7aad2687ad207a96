#pragma once
/// @file
/// The CUDA-core decode mainloop, for float inputs (full precision; tensor cores would round
/// the operands): one unit (a radix work item or a paged-decode CTA's rows, see
/// decode_rows.cuh) over one token range.
///
/// The unit's rows go RadixSimtTraits::kRowsPerPass (4) at a time (query heads of one kv
/// head). In a pass the CTA's warps split the token range, step by step (warp w takes steps w,
/// w + kWarps, ...), and every warp holds all of the pass's rows: each K/V row a warp loads
/// serves every head of the pass, so a CTA has kWarps different steps of K/V in flight. A step
/// is kTokens tokens whose K and V rows are loaded together (16-byte runs per lane: lane l owns
/// dims l * kVec ...), whose scores are reduced over the warp together, and after which each
/// row's online softmax is rescaled once; the step's block-table entries are read a step ahead
/// by its first lanes. At the end of a pass the warps' states (max, sum, output row) meet in
/// shared memory and warp r combines and stores row r.

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

/// VEC consecutive floats from `src` (aligned to VEC floats) in one load; GLOBAL: read-only
/// global memory (through the non-coherent path), else any state space (shared memory).
template <int VEC, bool GLOBAL = false>
__device__ __forceinline__ void load_run(const float* __restrict__ src, float* dst) {
  if constexpr (VEC == 4) {
    const float4 x = GLOBAL ? __ldg(reinterpret_cast<const float4*>(src))
                            : *reinterpret_cast<const float4*>(src);
    dst[0] = x.x;
    dst[1] = x.y;
    dst[2] = x.z;
    dst[3] = x.w;
  } else if constexpr (VEC == 2) {
    const float2 x = GLOBAL ? __ldg(reinterpret_cast<const float2*>(src))
                            : *reinterpret_cast<const float2*>(src);
    dst[0] = x.x;
    dst[1] = x.y;
  } else {
    dst[0] = GLOBAL ? __ldg(src) : *src;
  }
}

template <class T, int HEAD_DIM, class Params, class Rows>
__device__ __forceinline__ void radix_simt_item(const Params& p, const DecodeSpan& span,
                                                const Rows& unit_rows, int kv_head) {
  static_assert(std::is_same_v<T, float>, "the CUDA-core mainloop reads float queries and caches");
  static_assert(HEAD_DIM % 32 == 0, "each lane owns HEAD_DIM / 32 dimensions");
  constexpr int kWarps = RadixSimtTraits::kWarps;
  constexpr int kRows = RadixSimtTraits::kRowsPerPass;
  static_assert(kRows <= kWarps, "warp r combines row r of a pass");
  constexpr int kPerLane = HEAD_DIM / 32;
  constexpr int kVec = kSimtVec<HEAD_DIM>;
  constexpr int kRuns = kPerLane / kVec;
  // Tokens per step: K and V of kTokens rows in registers (2 x kTokens x kPerLane floats).
  constexpr int kTokens = HEAD_DIM <= 128 ? 8 : 4;
  // The warps' states at the end of a pass: output rows (unnormalised), max and sum per row.
  __shared__ __align__(16) float pass_out[kWarps][kRows][HEAD_DIM];
  __shared__ float pass_max[kWarps][kRows];
  __shared__ float pass_sum[kWarps][kRows];

  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const int end = span.end;
  const int block_size = p.block_size;
  const std::int32_t* table_row = span.table_row;
  const int first = span.begin + warp * kTokens;  // this warp's first step
  constexpr int kStride = kWarps * kTokens;       // tokens between this warp's steps
  auto dim_of = [&](int c) { return c * 32 * kVec + lane * kVec; };

  for (int row0 = 0; row0 < unit_rows.rows; row0 += kRows) {
    const int rows = min(kRows, unit_rows.rows - row0);  // uniform over the CTA
    float qv[kRows][kPerLane];
    float acc[kRows][kPerLane];
    float m[kRows];
    float l[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r < rows) {
        const float* q = p.q + unit_rows.q_offset(row0 + r);
#pragma unroll
        for (int c = 0; c < kRuns; ++c) load_run<kVec, true>(q + dim_of(c), qv[r] + c * kVec);
      }
#pragma unroll
      for (int i = 0; i < kPerLane; ++i) acc[r][i] = 0.f;
      m[r] = -INFINITY;
      l[r] = 0.f;
    }
    // Lane j < kTokens holds the block id of token t + j of this warp's coming step.
    int next_block =
        lane < kTokens ? load_table_entry(table_row, first + lane, end, block_size) : -1;
    for (int t = first; t < end; t += kStride) {
      const int my_slot =
          lane < kTokens ? table_entry_slot(next_block, t + lane, end, block_size, p.kv) : -1;
      if (lane < kTokens) {
        next_block = load_table_entry(table_row, t + kStride + lane, end, block_size);
      }
      float kr[kTokens][kPerLane];
      float vr[kTokens][kPerLane];
      bool valid[kTokens];
#pragma unroll
      for (int j = 0; j < kTokens; ++j) {
        const int slot = __shfl_sync(0xffffffffu, my_slot, j);
        valid[j] = slot >= 0;
        if (valid[j]) {
          const std::int64_t base = kv_slot_offset(p.kv, slot, kv_head);
#pragma unroll
          for (int c = 0; c < kRuns; ++c) {
            load_run<kVec, true>(p.k_cache + base + dim_of(c), kr[j] + c * kVec);
            load_run<kVec, true>(p.v_cache + base + dim_of(c), vr[j] + c * kVec);
          }
        } else {
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) kr[j][i] = vr[j][i] = 0.f;
        }
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= rows) continue;  // uniform: the pass's real rows only
        float score[kTokens];
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          float dot = 0.f;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) dot = fmaf(qv[r][i], kr[j][i], dot);
          score[j] = dot;
        }
        // Butterfly (xor) shuffles, the step's kTokens sums interleaved: every lane ends with
        // every score, which the softmax update needs in all lanes (cub::WarpReduce leaves the
        // sum in lane 0 only and reduces one value per call).
#pragma unroll
        for (int off = 16; off > 0; off /= 2) {
#pragma unroll
          for (int j = 0; j < kTokens; ++j) {
            score[j] += __shfl_xor_sync(0xffffffffu, score[j], off);
          }
        }
        // Token t is below end, so every step has a score and m_new is finite.
        float m_new = m[r];
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          score[j] = valid[j] ? score[j] * p.scale_log2 : -INFINITY;
          m_new = fmaxf(m_new, score[j]);
        }
        const float alpha = exp2f(m[r] - m_new);  // 0 on the first step (m = -inf)
        l[r] *= alpha;
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) acc[r][i] *= alpha;
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          const float w = exp2f(score[j] - m_new);  // 0 for tokens past end
          l[r] += w;
#pragma unroll
          for (int i = 0; i < kPerLane; ++i) acc[r][i] = fmaf(w, vr[j][i], acc[r][i]);
        }
        m[r] = m_new;
      }
    }

    // Combine the warps' states: warp r stores row r. A warp without a step keeps m = -inf,
    // l = 0 and weighs nothing.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= rows) continue;
#pragma unroll
      for (int c = 0; c < kRuns; ++c) {
        float run[kVec];
#pragma unroll
        for (int e = 0; e < kVec; ++e) run[e] = acc[r][c * kVec + e];
        store_row_elems<float, kVec>(&pass_out[warp][r][dim_of(c)], run);
      }
      if (lane == 0) {
        pass_max[warp][r] = m[r];
        pass_sum[warp][r] = l[r];
      }
    }
    __syncthreads();
    if (warp < rows) {
      const int r = warp;
      float mx = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, pass_max[w][r]);
      float weight[kWarps];
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float mw = pass_max[w][r];
        weight[w] = mw == -INFINITY ? 0.f : exp2f(mw - mx);
        sum += pass_sum[w][r] * weight[w];
      }
      // A unit without tokens (an empty context or split) stores zeros and LSE -inf.
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const std::int64_t target = unit_rows.target(row0 + r);
#pragma unroll
      for (int c = 0; c < kRuns; ++c) {
        float run[kVec] = {};
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          float part[kVec];
          load_run<kVec>(&pass_out[w][r][dim_of(c)], part);
#pragma unroll
          for (int e = 0; e < kVec; ++e) run[e] = fmaf(part[e], weight[w], run[e]);
        }
#pragma unroll
        for (int e = 0; e < kVec; ++e) run[e] *= inv;
        unit_rows.template store<kVec>(target, dim_of(c), run);
      }
      if (lane == 0) unit_rows.store_lse(target, natural_lse(mx, sum));
    }
    __syncthreads();  // the next pass (or unit) rewrites the shared states
  }
}

}  // namespace radix_attention::detail
