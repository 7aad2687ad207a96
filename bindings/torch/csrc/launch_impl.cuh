#pragma once
/// @file
/// Typed bodies of the launch boundary (launch.hpp): turn DecodeArgs into the library's views
/// and call its launchers. Included by one .cu file per element type, which instantiates them.

#include "launch.hpp"
#include "radix_attention/ops/merge_states.cuh"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/radix_decode.cuh"

namespace radix_attention_torch::typed {

template <class T>
radix_attention::PagedKvCacheView<T> cache_view(const DecodeArgs& a) {
  radix_attention::PagedKvCacheView<T> cache;
  cache.k = static_cast<const T*>(a.k);
  cache.v = static_cast<const T*>(a.v);
  cache.num_blocks = a.num_blocks;
  cache.block_size = a.block_size;
  cache.num_kv_heads = a.num_kv_heads;
  cache.head_dim = a.head_dim;
  cache.block_stride = a.block_stride;
  cache.token_stride = a.token_stride;
  cache.head_stride = a.head_stride;
  return cache;
}

inline radix_attention::PagedDecodeOptions decode_options(const DecodeArgs& a) {
  radix_attention::PagedDecodeOptions options;
  options.scale = a.scale;
  options.num_splits = a.num_splits;
  options.q_row_stride = a.q_row_stride;
  options.out_row_stride = a.out_row_stride;
  return options;
}

template <class T>
std::size_t paged_decode_workspace(const DecodeArgs& a) {
  return radix_attention::paged_decode_workspace_bytes<T>(a.num_q_heads, cache_view<T>(a),
                                                          table_view(a), decode_options(a));
}

template <class T>
void paged_decode(const DecodeArgs& a, void* workspace, std::size_t workspace_bytes) {
  radix_attention::paged_decode<T>(static_cast<const T*>(a.q), a.num_q_heads, cache_view<T>(a),
                                   table_view(a), static_cast<T*>(a.out), a.lse, workspace,
                                   workspace_bytes, a.stream, decode_options(a));
}

template <class T>
void radix_decode(const DecodeArgs& a, const radix_attention::DeviceRadixPlan& plan,
                  void* workspace, std::size_t workspace_bytes, bool fixed_grid) {
  radix_attention::RadixDecodeOptions options;
  options.scale = a.scale;
  options.fixed_grid = fixed_grid;
  options.q_row_stride = a.q_row_stride;
  options.out_row_stride = a.out_row_stride;
  radix_attention::radix_decode<T>(static_cast<const T*>(a.q), a.num_q_heads, cache_view<T>(a),
                                   table_view(a), plan, static_cast<T*>(a.out), a.lse, workspace,
                                   workspace_bytes, a.stream, options);
}

template <class T>
void merge_states(const MergeArgs& a) {
  radix_attention::merge_states<T>(a.partial_out, a.partial_lse, a.num_partials, a.num_heads,
                                   a.head_dim, a.query_partial_indptr, a.query_partials,
                                   a.num_queries, static_cast<T*>(a.out), a.lse_out, a.stream);
}

}  // namespace radix_attention_torch::typed

/// Instantiates the paged-decode and merge launches for element type T.
#define RADIX_ATTENTION_TORCH_INSTANTIATE_PAGED(T)                      \
  namespace radix_attention_torch::typed {                              \
  template std::size_t paged_decode_workspace<T>(const DecodeArgs&);    \
  template void paged_decode<T>(const DecodeArgs&, void*, std::size_t); \
  template void merge_states<T>(const MergeArgs&);                      \
  }

/// Instantiates the radix-decode launch for element type T.
#define RADIX_ATTENTION_TORCH_INSTANTIATE_RADIX(T)                                                 \
  namespace radix_attention_torch::typed {                                                         \
  template void radix_decode<T>(const DecodeArgs&, const radix_attention::DeviceRadixPlan&, void*, \
                                std::size_t, bool);                                                \
  }
