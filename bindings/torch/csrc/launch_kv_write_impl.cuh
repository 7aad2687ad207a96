#pragma once
/// @file
/// Typed bodies of the cache writers of the launch boundary (launch.hpp): kv_append and
/// copy_blocks. Included by one .cu file per input element type.

#include "launch.hpp"
#include "radix_attention/ops/kv_append.cuh"

namespace radix_attention_torch::typed {

template <class T>
void kv_append(const KvAppendArgs& a) {
  radix_attention::KvAppendInput<T> input;
  input.k = static_cast<const T*>(a.k);
  input.v = static_cast<const T*>(a.v);
  input.num_tokens = a.num_tokens;
  input.token_stride = a.token_stride;
  input.head_stride = a.head_stride;
  if (a.cache_dtype == CacheDType::kFp8E4M3) {
    radix_attention::KvAppendOptions options;
    options.scales.k_scale = a.k_scale;
    options.scales.v_scale = a.v_scale;
    options.scales.mode = a.per_head_scales ? radix_attention::KvScaleMode::kPerHead
                                            : radix_attention::KvScaleMode::kPerTensor;
    options.nonfinite_count = a.nonfinite_count;
    radix_attention::kv_append<T, __nv_fp8_e4m3>(
        input, a.slot_mapping, cache_view_of<__nv_fp8_e4m3>(a.cache), a.stream, options);
  } else {
    radix_attention::kv_append<T, T>(input, a.slot_mapping, cache_view_of<T>(a.cache), a.stream);
  }
}

template <class T>
void copy_blocks_as(const CopyBlocksArgs& a) {
  const radix_attention::PagedKvCacheMutView<T> cache = cache_view_of<T>(a.cache);
  if (a.copy_width == 3) {
    radix_attention::copy_blocks<T>(cache,
                                    reinterpret_cast<const radix_attention::BlockCopy*>(a.copies),
                                    a.num_copies, a.stream);
  } else {
    radix_attention::copy_blocks<T>(cache, a.copies, a.num_copies, a.stream);
  }
}

template <class T>
void copy_blocks(const CopyBlocksArgs& a) {
  copy_blocks_as<T>(a);
}

}  // namespace radix_attention_torch::typed

/// Instantiates kv_append (T -> T and T -> fp8) and copy_blocks for element type T.
#define RADIX_ATTENTION_TORCH_INSTANTIATE_KV_WRITE(T)  \
  namespace radix_attention_torch::typed {             \
  template void kv_append<T>(const KvAppendArgs&);     \
  template void copy_blocks<T>(const CopyBlocksArgs&); \
  }
