#pragma once
/// @file
/// Paged decode attention kernels (one query token per sequence over its block table): the
/// no-sharing case of radix decode. A CTA is one unit of the decode mainloops the radix
/// kernels run, (split, kv head, up to 16 query heads of its group, sequence), so paged and
/// radix decode share one implementation of the attention math:
///  - paged_decode_mma_kernel<T, D, TKv>: 16-bit queries over a 16-bit or fp8 e4m3 cache, on
///    tensor cores (kernels/detail/radix_mma_item.cuh);
///  - paged_decode_simt_kernel<float, D>: float, CUDA cores (kernels/detail/radix_simt_item.cuh).
/// Both write the final row (num_splits == 1) or a split-KV partial state that
/// merge_states_kernel (kernels/merge_states.cuh) combines.
/// Host code calls radix_attention::paged_decode (ops/paged_decode.cuh), which validates the
/// arguments, plans split-KV and picks the instance.

#include <cuda_runtime.h>

#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/decode_rows.cuh"
#include "radix_attention/kernels/detail/paged_decode_common.cuh"
#include "radix_attention/kernels/detail/pdl.cuh"
#include "radix_attention/kernels/detail/radix_mma_item.cuh"
#include "radix_attention/kernels/detail/radix_simt_item.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"
#include "radix_attention/kernels/merge_states.cuh"

namespace radix_attention {

namespace detail {

/// Query heads one paged-decode CTA computes: the 16 rows of one m16n8k16 fragment, the
/// mainloop's layout with all 4 warps on each tile's tokens (radix_mma_item<..., 1>); larger
/// GQA groups take several CTAs along grid.y. The one layout keeps the instance at the
/// registers it needs (three layouts in one kernel cost a CTA per SM at fp8).
inline constexpr int kPagedDecodeRowsPerCta = 16;

/// The mainloop's traits for paged decode: the radix kernel's stages, kPagedDecodeRowsPerCta
/// query rows (a 4 KB Q tile at head_dim 128 instead of 16 KB). A fourth fp8 stage (3 CTAs per
/// SM still fit) measured no faster.
template <class T, int D, class TKv>
using PagedDecodeMmaTraits =
    RadixMmaTraits<T, D, TKv, RadixMmaTraits<T, D, TKv>::kStages, kPagedDecodeRowsPerCta>;

/// CTAs per SM the tensor-core instance is compiled for: 3 for an fp8 cache up to head_dim 128
/// (the registers are capped at 168 for it), else what shared memory allows by itself.
template <class T, int D, class TKv>
constexpr int paged_decode_min_ctas() {
  return PagedDecodeMmaTraits<T, D, TKv>::kFp8 && D <= 128 ? 3 : 1;
}

/// The unit of this CTA: grid = (split, kv head x head chunk, sequence).
template <int D, class T, class TKv>
__device__ __forceinline__ int paged_decode_unit(const PagedDecodeParams<T, TKv>& p,
                                                 DecodeSpan& span, PagedSeqRows<T, D>& rows) {
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int seq = blockIdx.z;
  const int head0 = kv_head * p.group_size + chunk * kPagedDecodeRowsPerCta;
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(seq) * p.block_table_stride;
  int begin, end;
  // Split ranges are whole KV tiles, so that only a split's last tile is partial.
  split_range(context_length(p, seq), split, p.num_splits, kRadixKvTileTokens, begin, end);
  span = DecodeSpan{table_row, begin, end};
  rows = PagedSeqRows<T, D>{};
  rows.q_base =
      static_cast<std::int64_t>(seq) * p.q_row_stride + static_cast<std::int64_t>(head0) * D;
  rows.rows = min(kPagedDecodeRowsPerCta, p.group_size - chunk * kPagedDecodeRowsPerCta);
  if (p.num_splits > 1) {
    const std::int64_t row0 =
        (static_cast<std::int64_t>(seq) * p.num_splits + split) * p.num_q_heads + head0;
    rows.partial_out = p.partial_out + row0 * D;
    rows.partial_lse = p.partial_lse + row0;
  } else {
    rows.out = p.out + static_cast<std::int64_t>(seq) * p.out_row_stride +
               static_cast<std::int64_t>(head0) * D;
    rows.lse =
        p.lse != nullptr ? p.lse + static_cast<std::int64_t>(seq) * p.num_q_heads + head0 : nullptr;
  }
  return kv_head;
}

}  // namespace detail

/**
 * @brief Tensor-core paged decode (T = __half or __nv_bfloat16; cache TKv = T or
 * __nv_fp8_e4m3); launch with PagedDecodeMmaTraits<T, D, TKv>::kThreads threads and kSmemBytes of
 * dynamic shared memory.
 */
template <class T, int D, class TKv = T>
__global__ void __launch_bounds__(detail::PagedDecodeMmaTraits<T, D, TKv>::kThreads,
                                  detail::paged_decode_min_ctas<T, D, TKv>())
    paged_decode_mma_kernel(const PagedDecodeParams<T, TKv> p) {
  static_assert(DTypeTraits<T>::is_16bit, "the tensor-core path takes 16-bit inputs");
  extern __shared__ __align__(16) unsigned char paged_decode_smem[];
  const detail::RadixMmaSmem<T, D, TKv, detail::PagedDecodeMmaTraits<T, D, TKv>> sm(
      paged_decode_smem);
  detail::allow_dependent_launch();  // the split-KV merge may start its prologue
  detail::DecodeSpan span;
  detail::PagedSeqRows<T, D> rows;
  const int kv_head = detail::paged_decode_unit<D>(p, span, rows);
  detail::radix_mma_item<T, D, 1, TKv>(p, sm, span, rows, kv_head);
}

/**
 * @brief CUDA-core paged decode (float); launch with RadixSimtTraits::kThreads threads and no
 * dynamic shared memory.
 */
template <class T, int D>
__global__ void __launch_bounds__(detail::RadixSimtTraits::kThreads)
    paged_decode_simt_kernel(const PagedDecodeParams<T> p) {
  detail::allow_dependent_launch();
  detail::DecodeSpan span;
  detail::PagedSeqRows<T, D> rows;
  const int kv_head = detail::paged_decode_unit<D>(p, span, rows);
  detail::radix_simt_item<T, D>(p, span, rows, kv_head);
}

}  // namespace radix_attention
