#pragma once
/// @file
/// Paged decode on CUDA cores, for float caches (tensor cores would round float inputs to
/// tf32, an error far above the float contract of 1e-5).
///
/// One CTA per (sequence, kv head, up to kRows query heads of its group, split). Each warp
/// takes every kWarps-th token; its lanes hold head_dim / 32 consecutive-by-lane elements of K,
/// V and of the kRows queries, so one K/V load serves all kRows heads. Scores are reduced with
/// an xor butterfly (every lane needs the sum, which cub::WarpReduce leaves in lane 0 only).

#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/paged_decode_common.cuh"

namespace radix_attention::detail {

template <class T, int D>
struct PagedDecodeSimtTraits {
  static_assert(D % 64 == 0, "head_dim must be a multiple of 64");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // Query heads per CTA: a group of up to 8 heads shares each K/V load; larger groups take
  // several CTAs (registers: 8 heads x D/32 accumulators + queries per lane).
  static constexpr int kRows = 8;
  static constexpr int kPerLane = D / 32;
  static constexpr int kVec = kPerLane >= 4 ? 4 : kPerLane;  // floats per vector load
  static constexpr int kTileTokens = kWarps;                 // split ranges align to this
  static constexpr int kSmemBytes = static_cast<int>(sizeof(EpilogueSmem<kWarps, kRows, D>));
};

/// Loads this lane's kPerLane elements of a D-long row as floats: element e is at
/// (e / kVec) * 32 * kVec + lane * kVec + e % kVec, so each vector load is coalesced.
template <class T, int D>
__device__ __forceinline__ void load_row(float (&dst)[D / 32], const T* row, int lane) {
  using Tr = PagedDecodeSimtTraits<T, D>;
  if constexpr (std::is_same_v<T, float> && Tr::kVec == 4) {
#pragma unroll
    for (int v = 0; v < Tr::kPerLane / 4; ++v) {
      const float4 x = *reinterpret_cast<const float4*>(row + v * 128 + lane * 4);
      dst[4 * v] = x.x, dst[4 * v + 1] = x.y, dst[4 * v + 2] = x.z, dst[4 * v + 3] = x.w;
    }
  } else if constexpr (std::is_same_v<T, float> && Tr::kVec == 2) {
    const float2 x = *reinterpret_cast<const float2*>(row + lane * 2);
    dst[0] = x.x, dst[1] = x.y;
  } else {
#pragma unroll
    for (int e = 0; e < Tr::kPerLane; ++e) {
      dst[e] = DTypeTraits<T>::to_float(
          row[(e / Tr::kVec) * 32 * Tr::kVec + lane * Tr::kVec + e % Tr::kVec]);
    }
  }
}

template <class T, int D>
__global__ void __launch_bounds__(PagedDecodeSimtTraits<T, D>::kThreads)
    paged_decode_simt_kernel(const PagedDecodeParams<T> p) {
  using Tr = PagedDecodeSimtTraits<T, D>;
  constexpr int R = Tr::kRows;
  constexpr int E = Tr::kPerLane;
  extern __shared__ __align__(128) unsigned char smem[];

  const int warp = threadIdx.x / 32;
  allow_dependent_launch();
  const int lane = threadIdx.x % 32;
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int seq = blockIdx.z;
  const int head0 = kv_head * p.group_size + chunk * R;
  const int rows = min(R, p.group_size - chunk * R);

  int begin, end;
  split_range(context_length(p, seq), split, p.num_splits, Tr::kTileTokens, begin, end);
  const std::int32_t* table_row =
      p.block_tables + static_cast<long long>(seq) * p.block_table_stride;

  float q[R][E];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (r < rows) {
      load_row<T, D>(q[r], p.q + static_cast<long long>(seq) * p.q_row_stride + (head0 + r) * D,
                     lane);
    } else {
#pragma unroll
      for (int e = 0; e < E; ++e) q[r][e] = 0.f;
    }
  }
  float acc[R][E];
  float row_max[R];
  float row_sum[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row_max[r] = -INFINITY;
    row_sum[r] = 0.f;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[r][e] = 0.f;
  }

  for (int token = begin + warp; token < end; token += Tr::kWarps) {
    const int slot = token_slot(p, __ldg(table_row + token / p.block_size), token);
    const long long offset = kv_slot_offset(p.kv, slot, kv_head);
    float k[E], v[E];
    load_row<T, D>(k, p.k_cache + offset, lane);
    load_row<T, D>(v, p.v_cache + offset, lane);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float dot = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) dot = fmaf(q[r][e], k[e], dot);
#pragma unroll
      for (int mask = 16; mask >= 1; mask >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, mask);
      const float score = dot * p.scale_log2;
      const float new_max = fmaxf(row_max[r], score);
      const float correction = exp2f(row_max[r] - new_max);  // 0 on the first token
      const float weight = exp2f(score - new_max);
      row_max[r] = new_max;
      row_sum[r] = row_sum[r] * correction + weight;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[r][e] = fmaf(acc[r][e], correction, weight * v[e]);
    }
  }

  auto& epi = *reinterpret_cast<EpilogueSmem<Tr::kWarps, R, D>*>(smem);
#pragma unroll
  for (int r = 0; r < R; ++r) {
    if (lane == 0) {
      epi.stats.max[warp][r] = row_max[r];
      epi.stats.sum[warp][r] = row_sum[r];
    }
#pragma unroll
    for (int e = 0; e < E; ++e) {
      epi.out[warp][r][(e / Tr::kVec) * 32 * Tr::kVec + lane * Tr::kVec + e % Tr::kVec] = acc[r][e];
    }
  }
  __syncthreads();
  combine_warps_and_store<T, Tr::kWarps, R, D, Tr::kThreads>(epi.out, epi.stats, p, seq, split,
                                                             head0, rows);
}

}  // namespace radix_attention::detail
