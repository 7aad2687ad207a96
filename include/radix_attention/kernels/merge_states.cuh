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

#include <cub/warp/warp_reduce.cuh>

#include <cmath>
#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/bounds_check.cuh"

namespace radix_attention {

/// @brief Device-side arguments of merge_states_kernel (see ops/merge_states.cuh).
template <class T>
struct MergeStatesParams {
  const float* partial_out;     ///< [num_partials, num_heads, head_dim]
  const float* partial_lse;     ///< [num_partials, num_heads], natural log
  const std::int32_t* indptr;   ///< [num_queries + 1]; nullptr: query i owns partials
                                ///< [i * uniform_count, (i + 1) * uniform_count)
  const std::int32_t* indices;  ///< partial ids, CSR order; nullptr: identity
  T* out;                       ///< [num_queries, num_heads, head_dim]
  float* lse_out;               ///< [num_queries, num_heads] or nullptr
  int num_partials;
  int num_queries;
  int num_heads;
  int head_dim;
  int uniform_count;
};

namespace detail {
inline constexpr int kMergeWarps = 4;
}

/// @brief One warp per (query, head): lanes split the partial list for the max/sum of weights,
/// then split head_dim for the weighted sum (consecutive lanes read consecutive floats).
template <class T>
__global__ void __launch_bounds__(detail::kMergeWarps * 32)
    merge_states_kernel(const MergeStatesParams<T> p) {
  using WarpReduce = cub::WarpReduce<float>;
  __shared__ typename WarpReduce::TempStorage reduce_storage[detail::kMergeWarps];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of the kernel that wrote the partials: wait here
  // until that grid has completed and its writes are visible (a no-op otherwise).
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const long long pair = static_cast<long long>(blockIdx.x) * detail::kMergeWarps + warp;
  if (pair >= static_cast<long long>(p.num_queries) * p.num_heads) return;
  const int query = static_cast<int>(pair / p.num_heads);
  const int head = static_cast<int>(pair % p.num_heads);

  int lo = query * p.uniform_count;
  int hi = lo + p.uniform_count;
  if (p.indptr != nullptr) {
    lo = p.indptr[query];
    hi = p.indptr[query + 1];
  }
  auto partial_id = [&](int j) {
    const int id = p.indices != nullptr ? p.indices[j] : j;
    RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(id >= 0 && id < p.num_partials);
    return id;
  };
  auto lse_of = [&](int id) {
    return p.partial_lse[static_cast<long long>(id) * p.num_heads + head];
  };

  float local_max = -INFINITY;
  for (int j = lo + lane; j < hi; j += 32) local_max = fmaxf(local_max, lse_of(partial_id(j)));
  // WarpReduce leaves the result in lane 0 only; broadcast it.
  const float max_lse =
      __shfl_sync(0xffffffffu,
                  WarpReduce(reduce_storage[warp])
                      .Reduce(local_max, [](float a, float b) { return fmaxf(a, b); }),
                  0);
  __syncwarp();
  float local_sum = 0.f;
  if (max_lse != -INFINITY) {
    for (int j = lo + lane; j < hi; j += 32) local_sum += expf(lse_of(partial_id(j)) - max_lse);
  }
  const float sum = __shfl_sync(0xffffffffu, WarpReduce(reduce_storage[warp]).Sum(local_sum), 0);
  const float inv_sum = sum > 0.f ? 1.f / sum : 0.f;

  T* out_row = p.out + (static_cast<long long>(query) * p.num_heads + head) * p.head_dim;
  for (int d = lane; d < p.head_dim; d += 32) {
    float acc = 0.f;
    if (sum > 0.f) {
      for (int j = lo; j < hi; ++j) {
        const int id = partial_id(j);
        const float lse = lse_of(id);
        if (lse == -INFINITY) continue;  // empty partial: its output row may be anything finite
        const float w = expf(lse - max_lse) * inv_sum;
        acc +=
            w * p.partial_out[(static_cast<long long>(id) * p.num_heads + head) * p.head_dim + d];
      }
    }
    out_row[d] = DTypeTraits<T>::from_float(acc);
  }
  if (p.lse_out != nullptr && lane == 0) {
    p.lse_out[static_cast<long long>(query) * p.num_heads + head] =
        sum > 0.f ? max_lse + logf(sum) : -INFINITY;
  }
}

}  // namespace radix_attention
