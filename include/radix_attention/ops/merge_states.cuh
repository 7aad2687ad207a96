#pragma once
/// @file
/// Host launcher of merge_states: exact combination of partial attention states.

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/device_query.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/kernels/merge_states.cuh"

namespace radix_attention {
namespace detail {

/// Whether the current device supports programmatic dependent launch (compute capability 9+),
/// cached per device.
inline bool device_supports_pdl() {
  static std::array<std::atomic<int>, kMaxCachedDevices> cache{};  // 0 unknown, 1 no, 2 yes
  const int device = current_device();
  if (device < kMaxCachedDevices && cache[device].load(std::memory_order_relaxed) != 0) {
    return cache[device].load(std::memory_order_relaxed) == 2;
  }
  int major = 0;
  RADIX_ATTENTION_CUDA_CHECK(
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (device < kMaxCachedDevices)
    cache[device].store(major >= 9 ? 2 : 1, std::memory_order_relaxed);
  return major >= 9;
}

/// Launches merge_states_kernel for `p` on `stream` as a programmatic dependent launch
/// where the device supports it (the kernel waits for the producer of the partials). The
/// 4-wide instance is used when head_dim and both row arrays allow 16-byte float loads.
/// An out_row_stride of 0 means dense rows.
template <class T>
void launch_merge_states(const MergeStatesParams<T>& p, cudaStream_t stream) {
  MergeStatesParams<T> params = p;
  if (params.out_row_stride == 0) {
    params.out_row_stride = static_cast<std::int64_t>(params.num_heads) * params.head_dim;
  }
  const long long rows = static_cast<long long>(params.num_queries) * params.num_heads;
  if (rows == 0) return;
  const auto aligned = [](const void* ptr, std::size_t bytes) {
    return reinterpret_cast<std::uintptr_t>(ptr) % bytes == 0;
  };
  const bool vec4 = params.head_dim % 4 == 0 && params.out_row_stride % 4 == 0 &&
                    aligned(params.partial_out, 16) && aligned(params.out, 4 * sizeof(T));
  const int vec = vec4 ? 4 : 1;
  const long long threads = rows * ((params.head_dim + vec - 1) / vec);
  const long long blocks = (threads + kMergeThreads - 1) / kMergeThreads;
  expects_that(blocks <= 0x7fffffffLL,
               "merge_states: num_queries * num_heads * head_dim = ", rows * params.head_dim,
               " is too large for one launch");
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kMergeThreads);
  config.stream = stream;
  // Programmatic dependent launch (sm_90+): the merge grid is scheduled while the producer of
  // the partials drains, hiding its launch latency; the kernel waits for the producer's
  // completion (griddepcontrol.wait) before reading anything.
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  if (device_supports_pdl()) {
    config.attrs = &attribute;
    config.numAttrs = 1;
  }
  if (vec4) {
    RADIX_ATTENTION_CUDA_CHECK(cudaLaunchKernelEx(&config, merge_states_kernel<T, 4>, params));
  } else {
    RADIX_ATTENTION_CUDA_CHECK(cudaLaunchKernelEx(&config, merge_states_kernel<T, 1>, params));
  }
}

}  // namespace detail

/**
 * @brief Merges partial attention states (FlashDecoding / cascade style) into final rows.
 * Rows of `out` may lie further apart than num_heads * head_dim (`out_row_stride`), e.g. a
 * slice of a wider output.
 *
 * Partial p is an output row `partial_out[p][h][:]` (float, normalised over its own token
 * range) with `partial_lse[p][h]` = log(sum over its range of exp(score)) in NATURAL log
 * (not base 2). For query i, the partials `query_partials[query_partial_indptr[i] ..
 * query_partial_indptr[i + 1])` (disjoint token ranges of the same query) are merged exactly:
 * out = sum_p exp(lse_p - lse) * out_p with lse = log(sum_p exp(lse_p)). A partial with
 * lse = -inf is empty and ignored (its row may hold anything finite); a query with no
 * non-empty partial gets out = 0 and lse = -inf.
 *
 * @param partial_out [num_partials, num_heads, head_dim] float, device.
 * @param partial_lse [num_partials, num_heads] float, device.
 * @param num_partials number of partial rows (>= 0); ids must lie in [0, num_partials).
 * @param num_heads heads per row (>= 1).
 * @param head_dim elements per head (>= 1).
 * @param query_partial_indptr int32 [num_queries + 1], non-decreasing, device.
 * @param query_partials int32 partial ids, device.
 * @param num_queries rows to produce (>= 0; 0 launches nothing).
 * @param out [num_queries, num_heads, head_dim] of T, device, rows out_row_stride apart.
 * @param lse_out [num_queries, num_heads] float natural-log LSE, device (dense), or nullptr.
 * @param stream stream to launch on.
 * @param out_row_stride elements between rows of out: 0 (dense) or >= num_heads * head_dim.
 * @throw InvalidArgument on a null required pointer or a negative / zero extent;
 *        CudaError if the launch fails. Ids are not read on the host: see
 *        RADIX_ATTENTION_KERNEL_BOUNDS_CHECK.
 */
template <class T>
void merge_states(const float* partial_out, const float* partial_lse, int num_partials,
                  int num_heads, int head_dim, const std::int32_t* query_partial_indptr,
                  const std::int32_t* query_partials, int num_queries, T* out, float* lse_out,
                  cudaStream_t stream, std::int64_t out_row_stride = 0) {
  static_assert(is_supported_dtype_v<T>, "merge_states: T must be float, __half or __nv_bfloat16");
  expects(num_partials >= 0, "num_partials", num_partials, "must be >= 0");
  expects(num_heads >= 1, "num_heads", num_heads, "must be >= 1");
  expects(head_dim >= 1, "head_dim", head_dim, "must be >= 1");
  expects(num_queries >= 0, "num_queries", num_queries, "must be >= 0");
  expects(out_row_stride == 0 || out_row_stride >= static_cast<std::int64_t>(num_heads) * head_dim,
          "out_row_stride", out_row_stride, "must be 0 (dense) or >= num_heads * head_dim");
  if (num_queries == 0) return;
  expects(out != nullptr, "out", "nullptr",
          "must point to num_queries * num_heads * head_dim elements");
  expects(query_partial_indptr != nullptr, "query_partial_indptr", "nullptr",
          "must point to num_queries + 1 int32");
  if (num_partials > 0) {
    expects(partial_out != nullptr, "partial_out", "nullptr",
            "must be non-null when num_partials > 0");
    expects(partial_lse != nullptr, "partial_lse", "nullptr",
            "must be non-null when num_partials > 0");
    expects(query_partials != nullptr, "query_partials", "nullptr",
            "must be non-null when num_partials > 0");
  }
  MergeStatesParams<T> params{};
  params.partial_out = partial_out;
  params.partial_lse = partial_lse;
  params.indptr = query_partial_indptr;
  params.indices = query_partials;
  params.out = out;
  params.lse_out = lse_out;
  params.num_partials = num_partials;
  params.num_queries = num_queries;
  params.num_heads = num_heads;
  params.head_dim = head_dim;
  params.out_row_stride = out_row_stride;
  params.uniform_count = 0;
  detail::launch_merge_states(params, stream);
}

}  // namespace radix_attention
