#pragma once
/// @file
/// Radix-decode kernels: execute a packed RadixPlan (plan/radix_plan_layout.hpp).
/// One launch covers every chunk of the batch: CTA work unit = (work item, KV head), where a
/// work item is a chunk and a tile of up to 64 of its rows (queries x the KV head's query
/// heads). Each CTA streams the chunk's KV once and writes one partial state (float output,
/// natural-log LSE) per row; `merge_states` then combines each query's partials.
///
/// The grid either has one CTA per unit (`total_work` known on the host) or is fixed and
/// persistent (CTAs loop over units; the count is read from the plan's header on the device),
/// which lets a CUDA graph replay the launch for plans of varying size.
/// The host launcher is ops/radix_decode.cuh.

#include <cuda_runtime.h>

#include <type_traits>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/pdl.cuh"
#include "radix_attention/kernels/detail/radix_mma_item.cuh"
#include "radix_attention/kernels/detail/radix_simt_item.cuh"
#include "radix_attention/kernels/detail/radix_tma.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"

namespace radix_attention {

namespace detail {

/// The token range and row map of work item `it` for kv head `kv_head`.
template <int HEAD_DIM, class T, class TKv>
__device__ __forceinline__ void radix_item_unit(const RadixKernelParams<T, TKv>& p,
                                                const RadixItem& it, int kv_head, DecodeSpan& span,
                                                RadixItemRows<HEAD_DIM>& rows) {
  span = DecodeSpan{p.block_tables + static_cast<std::int64_t>(it.table_row) * p.block_table_stride,
                    it.begin, it.end};
  rows =
      RadixItemRows<HEAD_DIM>{&p.plan, it.query_base, it.row_begin,   it.rows,       p.group_size,
                              kv_head, p.num_q_heads, p.q_row_stride, p.partial_out, p.partial_lse};
}

/// Runs `unit(span, rows, kv_head)` on each (work item, kv head) unit of this CTA: one unit per
/// CTA, or, with a fixed grid, every gridDim.x-th unit of the count in the plan's header.
template <int HEAD_DIM, class T, class TKv, class UnitFn>
__device__ __forceinline__ void for_each_radix_unit(const RadixKernelParams<T, TKv>& p,
                                                    UnitFn&& unit) {
  const int total =
      p.total_work >= 0 ? p.total_work : p.plan.header[kHeaderNumItems] * p.num_kv_heads;
  for (int w = blockIdx.x; w < total; w += gridDim.x) {
    const int item = w / p.num_kv_heads;
    const int kv_head = w - item * p.num_kv_heads;
    const RadixItem it = load_radix_item(p.plan.items + item);
    DecodeSpan span;
    RadixItemRows<HEAD_DIM> rows;
    radix_item_unit(p, it, kv_head, span, rows);
    unit(span, rows, kv_head);
  }
}

}  // namespace detail

/**
 * @brief Tensor-core radix decode (T = __half or __nv_bfloat16; cache TKv = T or
 * __nv_fp8_e4m3); launch with RadixMmaTraits<T, HEAD_DIM, TKv>::kThreads threads and
 * kSmemBytes of dynamic shared memory.
 */
template <class T, int HEAD_DIM, class TKv = T>
__global__ void __launch_bounds__(detail::RadixMmaTraits<T, HEAD_DIM, TKv>::kThreads, 1)
    radix_decode_mma_kernel(const detail::RadixKernelParams<T, TKv> p) {
  static_assert(DTypeTraits<T>::is_16bit, "the tensor-core path takes 16-bit inputs");
  extern __shared__ __align__(16) unsigned char radix_smem[];
  const detail::RadixMmaSmem<T, HEAD_DIM, TKv> sm(radix_smem);
  detail::allow_dependent_launch();  // the merge may take the SMs this grid leaves free
  detail::for_each_radix_unit<HEAD_DIM>(p, [&](const auto& span, const auto& rows, int kv_head) {
    detail::radix_mma_unit<T, HEAD_DIM, TKv>(p, sm, span, rows, kv_head);
  });
}

/**
 * @brief CUDA-core radix decode (float); launch with
 * RadixSimtTraits::kThreads threads and no dynamic shared memory.
 */
template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(detail::RadixSimtTraits::kThreads)
    radix_decode_simt_kernel(const detail::RadixKernelParams<T> p) {
  detail::allow_dependent_launch();  // the merge may take the SMs this grid leaves free
  detail::for_each_radix_unit<HEAD_DIM>(p, [&](const auto& span, const auto& rows, int kv_head) {
    detail::radix_simt_item<T, HEAD_DIM>(p, span, rows, kv_head);
  });
}

}  // namespace radix_attention
