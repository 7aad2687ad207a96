#pragma once
/// @file
/// merge_states kernel: combines partial attention states (output rows + natural-log LSE over
/// disjoint token ranges) into the exact attention over the union of the ranges.
///
/// For query i and head h, with partials j in the list of query i:
///   M = max_j lse_j,  W = sum_j exp(lse_j - M),  out = sum_j exp(lse_j - M) / W * out_j,
///   lse = M + log(W).
/// Partials with lse = -inf (empty ranges) carry zero weight; a query whose partials are all
/// empty (or that has none) gets out = 0 and lse = -inf.
///
/// Shape: each thread owns VEC consecutive dims of one (query, head) row and walks the row's
/// partial list four entries at a time with a running maximum (rescaling what it has summed
/// when the maximum grows), so the loads of four partials (id, LSE, VEC floats) are in flight
/// together and no separate pass over the LSEs is needed: the dependent-load chain per batch
/// is id -> (LSE, values). With the short lists of split-KV and the long lists a shared
/// prefix produces alike, the kernel streams the partials instead of waiting on each one.

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/pdl.cuh"
#include "radix_attention/kernels/detail/row_results.cuh"

namespace radix_attention {

/// @brief Device-side arguments of merge_states_kernel (see ops/merge_states.cuh).
template <class T>
struct MergeStatesParams {
  const float* partial_out;     ///< [num_partials, num_heads, head_dim]
  const float* partial_lse;     ///< [num_partials, num_heads], natural log
  const std::int32_t* indptr;   ///< [num_queries + 1]; nullptr: query i owns partials
                                ///< [i * uniform_count, (i + 1) * uniform_count)
  const std::int32_t* indices;  ///< partial ids, CSR order; nullptr: identity
  T* out;                       ///< [num_queries rows (out_row_stride apart), num_heads, head_dim]
  float* lse_out;               ///< [num_queries, num_heads] (dense) or nullptr
  std::int64_t out_row_stride;  ///< elements between rows of out; 0 = num_heads * head_dim
  int num_partials;
  int num_queries;
  int num_heads;
  int head_dim;
  int uniform_count;
};

namespace detail {

inline constexpr int kMergeThreads = 128;
/// Partials whose loads one thread keeps in flight together (8 measured no faster on lists of
/// 5-17 partials, with 46 -> 67 registers).
inline constexpr int kMergeBatch = 4;

template <int VEC>
struct MergeVec {
  float v[VEC];
};

template <int VEC>
__device__ __forceinline__ MergeVec<VEC> load_merge_vec(const float* src) {
  MergeVec<VEC> r;
  if constexpr (VEC == 4) {
    const float4 x = *reinterpret_cast<const float4*>(src);
    r.v[0] = x.x;
    r.v[1] = x.y;
    r.v[2] = x.z;
    r.v[3] = x.w;
  } else {
#pragma unroll
    for (int i = 0; i < VEC; ++i) r.v[i] = src[i];
  }
  return r;
}

}  // namespace detail

/// @brief Grid: ceil(num_queries * num_heads * ceil(head_dim / VEC) / kMergeThreads) CTAs of
/// kMergeThreads. VEC = 4 needs head_dim % 4 == 0, partial_out 16-byte and out 4 x sizeof(T)
/// aligned, out_row_stride a multiple of 4 (the launcher checks); VEC = 1 takes anything.
/// out_row_stride is resolved (never 0) by the launcher.
template <class T, int VEC>
__global__ void __launch_bounds__(detail::kMergeThreads)
    merge_states_kernel(const MergeStatesParams<T> p) {
  // Launched as a programmatic dependent of the kernel that wrote the partials: wait here
  // until that grid has completed and its writes are visible (a no-op otherwise).
  detail::wait_for_producer();
  constexpr int B = detail::kMergeBatch;
  const int lanes_per_row = (p.head_dim + VEC - 1) / VEC;
  const long long t = static_cast<long long>(blockIdx.x) * detail::kMergeThreads + threadIdx.x;
  const long long row = t / lanes_per_row;  // (query, head)
  if (row >= static_cast<long long>(p.num_queries) * p.num_heads) return;
  const int d0 = static_cast<int>(t - row * lanes_per_row) * VEC;
  const int query = static_cast<int>(row / p.num_heads);
  const int head = static_cast<int>(row - static_cast<long long>(query) * p.num_heads);
  // VEC divides head_dim (the launcher picks VEC = 1 otherwise): every lane's dims exist.
  int lo = query * p.uniform_count;
  int hi = lo + p.uniform_count;
  if (p.indptr != nullptr) {
    lo = p.indptr[query];
    hi = p.indptr[query + 1];
  }

  float m = -INFINITY;  // running maximum of the LSEs seen
  float sum = 0.f;      // sum of exp(lse - m)
  float acc[VEC];
#pragma unroll
  for (int i = 0; i < VEC; ++i) acc[i] = 0.f;

  for (int j = lo; j < hi; j += B) {
    int id[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      id[u] = -1;
      if (j + u < hi) {
        id[u] = p.indices != nullptr ? p.indices[j + u] : j + u;
        RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(id[u] >= 0 && id[u] < p.num_partials);
      }
    }
    float lse[B];
    detail::MergeVec<VEC> val[B];
#pragma unroll
    for (int u = 0; u < B; ++u) {
      lse[u] = -INFINITY;
      if (id[u] >= 0) {
        const long long r = static_cast<long long>(id[u]) * p.num_heads + head;
        lse[u] = p.partial_lse[r];
        val[u] = detail::load_merge_vec<VEC>(p.partial_out + r * p.head_dim + d0);
      }
    }
    float batch_max = -INFINITY;
#pragma unroll
    for (int u = 0; u < B; ++u) batch_max = fmaxf(batch_max, lse[u]);
    if (batch_max == -INFINITY) continue;  // only empty partials in this batch
    const float m_new = fmaxf(m, batch_max);
    const float rescale = expf(m - m_new);  // 0 while nothing was summed (m = -inf)
    sum *= rescale;
#pragma unroll
    for (int i = 0; i < VEC; ++i) acc[i] *= rescale;
#pragma unroll
    for (int u = 0; u < B; ++u) {
      // An empty partial (lse -inf) weighs 0; its row may hold anything finite.
      if (lse[u] == -INFINITY) continue;
      const float w = expf(lse[u] - m_new);
      sum += w;
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[i] = fmaf(w, val[u].v[i], acc[i]);
    }
    m = m_new;
  }
  const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
  for (int i = 0; i < VEC; ++i) acc[i] *= inv;
  detail::store_row_elems<T, VEC>(p.out + static_cast<long long>(query) * p.out_row_stride +
                                      static_cast<long long>(head) * p.head_dim + d0,
                                  acc);
  if (p.lse_out != nullptr && d0 == 0) p.lse_out[row] = sum > 0.f ? m + logf(sum) : -INFINITY;
}

}  // namespace radix_attention
