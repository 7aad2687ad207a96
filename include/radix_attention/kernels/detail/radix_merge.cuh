#pragma once
/// @file
/// Merge of the radix kernel's partial states, the same function as merge_states (natural-log
/// LSE, CSR list of partials per query, empty partial = -inf, no partial -> out 0, lse -inf),
/// shaped for the many-partials-per-query lists a shared prefix produces: each thread owns 4
/// consecutive dims of one (query, head) row (16-byte loads), reads the row's LSEs once, and
/// keeps 4 partial rows' loads in flight, so the merge streams instead of waiting on one
/// dependent load per partial.

#include <cuda_runtime.h>

#include <cstdint>

#include "radix_attention/core/dtype.cuh"

namespace radix_attention::detail {

inline constexpr int kRadixMergeThreads = 128;

template <class T>
struct RadixMergeParams {
  const float* partial_out;  ///< [*, num_heads, head_dim]
  const float* partial_lse;  ///< [*, num_heads]
  const std::int32_t* indptr;
  const std::int32_t* indices;
  T* out;
  float* lse_out;  ///< or nullptr
  int num_queries;
  int num_heads;
};

template <class T>
__device__ __forceinline__ void radix_store4(T* dst, float a, float b, float c, float d) {
  if constexpr (DTypeTraits<T>::is_16bit) {
    uint2 v;
    v.x = DTypeTraits<T>::pack2(a, b);
    v.y = DTypeTraits<T>::pack2(c, d);
    *reinterpret_cast<uint2*>(dst) = v;
  } else {
    *reinterpret_cast<float4*>(dst) = make_float4(a, b, c, d);
  }
}

/// Grid: ceil(num_queries * num_heads * HEAD_DIM / 4 / kRadixMergeThreads) CTAs.
template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(kRadixMergeThreads)
    radix_merge_kernel(const RadixMergeParams<T> p) {
  constexpr int kLanesPerRow = HEAD_DIM / 4;
  const long long t = static_cast<long long>(blockIdx.x) * kRadixMergeThreads + threadIdx.x;
  const long long row = t / kLanesPerRow;  // (query, head)
  if (row >= static_cast<long long>(p.num_queries) * p.num_heads) return;
  const int d4 = static_cast<int>(t % kLanesPerRow) * 4;
  const int query = static_cast<int>(row / p.num_heads);
  const int head = static_cast<int>(row % p.num_heads);
  const int lo = p.indptr[query];
  const int hi = p.indptr[query + 1];

  float max_lse = -INFINITY;
  for (int j = lo; j < hi; ++j) {
    max_lse =
        fmaxf(max_lse, p.partial_lse[static_cast<long long>(p.indices[j]) * p.num_heads + head]);
  }
  float sum = 0.f;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if (max_lse != -INFINITY) {
    int j = lo;
    // Four partial rows per step: independent 16-byte loads in flight together.
    for (; j + 4 <= hi; j += 4) {
      int id[4];
      float w[4];
      float4 v[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) id[u] = p.indices[j + u];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const long long r = static_cast<long long>(id[u]) * p.num_heads + head;
        w[u] = p.partial_lse[r];
        v[u] = *reinterpret_cast<const float4*>(p.partial_out + r * HEAD_DIM + d4);
      }
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        // An empty partial (lse -inf) weighs 0; its row may hold anything finite.
        const float wu = w[u] == -INFINITY ? 0.f : expf(w[u] - max_lse);
        sum += wu;
        acc[0] = fmaf(wu, v[u].x, acc[0]);
        acc[1] = fmaf(wu, v[u].y, acc[1]);
        acc[2] = fmaf(wu, v[u].z, acc[2]);
        acc[3] = fmaf(wu, v[u].w, acc[3]);
      }
    }
    for (; j < hi; ++j) {
      const long long r = static_cast<long long>(p.indices[j]) * p.num_heads + head;
      const float w = p.partial_lse[r];
      if (w == -INFINITY) continue;
      const float wu = expf(w - max_lse);
      const float4 v = *reinterpret_cast<const float4*>(p.partial_out + r * HEAD_DIM + d4);
      sum += wu;
      acc[0] = fmaf(wu, v.x, acc[0]);
      acc[1] = fmaf(wu, v.y, acc[1]);
      acc[2] = fmaf(wu, v.z, acc[2]);
      acc[3] = fmaf(wu, v.w, acc[3]);
    }
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
  radix_store4(p.out + row * HEAD_DIM + d4, acc[0] * inv, acc[1] * inv, acc[2] * inv, acc[3] * inv);
  if (p.lse_out != nullptr && d4 == 0) {
    p.lse_out[row] = sum > 0.f ? max_lse + logf(sum) : -INFINITY;
  }
}

}  // namespace radix_attention::detail
