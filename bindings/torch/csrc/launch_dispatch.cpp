// The one place where the runtime element type picks a typed launch instance.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "launch.hpp"

namespace radix_attention_torch {
namespace {

template <class F>
decltype(auto) dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat:
      return f(static_cast<float*>(nullptr));
    case DType::kHalf:
      return f(static_cast<__half*>(nullptr));
    case DType::kBFloat16:
    default:
      return f(static_cast<__nv_bfloat16*>(nullptr));
  }
}

}  // namespace

std::size_t paged_decode_workspace(const DecodeArgs& args) {
  return dispatch(args.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return typed::paged_decode_workspace<T>(args);
  });
}

void paged_decode(const DecodeArgs& args, void* workspace, std::size_t workspace_bytes) {
  dispatch(args.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    typed::paged_decode<T>(args, workspace, workspace_bytes);
  });
}

void radix_decode(const DecodeArgs& args, const radix_attention::DeviceRadixPlan& plan,
                  void* workspace, std::size_t workspace_bytes, bool fixed_grid) {
  dispatch(args.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    typed::radix_decode<T>(args, plan, workspace, workspace_bytes, fixed_grid);
  });
}

void merge_states(const MergeArgs& args) {
  dispatch(args.out_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    typed::merge_states<T>(args);
  });
}

void paged_prefill(const PrefillArgs& args) {
  dispatch(args.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    typed::paged_prefill<T>(args);
  });
}

void kv_append(const KvAppendArgs& args) {
  dispatch(args.in_dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    typed::kv_append<T>(args);
  });
}

void copy_blocks(const CopyBlocksArgs& args) {
  switch (args.dtype) {
    case CacheDType::kFloat:
      return typed::copy_blocks<float>(args);
    case CacheDType::kHalf:
      return typed::copy_blocks<__half>(args);
    case CacheDType::kFp8E4M3:
      return typed::copy_blocks_fp8(args);
    case CacheDType::kBFloat16:
    default:
      return typed::copy_blocks<__nv_bfloat16>(args);
  }
}

}  // namespace radix_attention_torch
