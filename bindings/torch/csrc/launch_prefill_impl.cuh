#pragma once
/// @file
/// Typed body of the paged_prefill launch (launch.hpp): PrefillArgs -> the library's views ->
/// radix_attention::paged_prefill. Included by one .cu file per element type.

#include "launch.hpp"
#include "radix_attention/ops/paged_prefill.cuh"

namespace radix_attention_torch::typed {

template <class T>
void paged_prefill(const PrefillArgs& a) {
  radix_attention::PrefillBatchView batch;
  batch.qo_indptr = a.qo_indptr;
  batch.total_q = a.total_q;
  batch.max_q_len = a.max_q_len;
  batch.q_row_stride = a.q_row_stride;
  batch.out_row_stride = a.out_row_stride;
  radix_attention::PagedPrefillOptions options;
  options.scale = a.scale;
  options.causal = a.causal;
  options.allow_wgmma = a.allow_wgmma;
  radix_attention::paged_prefill<T>(static_cast<const T*>(a.q), a.num_q_heads, batch,
                                    cache_view_of<T>(a.cache).as_const(), table_view(a),
                                    static_cast<T*>(a.out), a.lse, a.stream, options);
}

}  // namespace radix_attention_torch::typed

/// Instantiates the paged-prefill launch for element type T.
#define RADIX_ATTENTION_TORCH_INSTANTIATE_PREFILL(T)  \
  namespace radix_attention_torch::typed {            \
  template void paged_prefill<T>(const PrefillArgs&); \
  }
