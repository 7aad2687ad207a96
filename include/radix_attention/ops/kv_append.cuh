#pragma once
/// @file
/// Host launcher of kv_append: writes the new tokens' K and V into their paged-cache slots in
/// one launch, 16 bytes per access where the layout allows it, optionally quantising into an
/// fp8 e4m3 cache. Also brings in copy_blocks (ops/copy_blocks.cuh) and the host validators of
/// the device data both trust (ops/kv_write_validation.hpp).
///
/// @code
///   // k and v are slices of a fused QKV projection [tokens, (Hq + 2 Hkv) * D]:
///   radix_attention::KvAppendInput<__nv_bfloat16> input{qkv + Hq * D, qkv + (Hq + Hkv) * D,
///                                                       num_tokens, (Hq + 2 * Hkv) * D};
///   radix_attention::PagedKvCacheMutView<__nv_bfloat16> cache{k_cache, v_cache, num_blocks,
///                                                             block_size, Hkv, D};
///   radix_attention::kv_append(input, d_slot_mapping, cache, stream);
/// @endcode

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/fp8.cuh"
#include "radix_attention/core/kv_scales.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/kv_append.cuh"
#include "radix_attention/ops/copy_blocks.cuh"
#include "radix_attention/ops/detail/kv_write_checks.hpp"
#include "radix_attention/ops/detail/kv_write_launch.hpp"
#include "radix_attention/ops/kv_write_validation.hpp"

namespace radix_attention {

/// @brief The new tokens' K and V rows (device): element (token t, head h, e) of K at
/// `k + t * token_stride + h * head_stride + e`, likewise for V with the same strides; the
/// head_dim elements of a head contiguous. num_kv_heads and head_dim are the cache's.
template <class T>
struct KvAppendInput {
  const T* k = nullptr;
  const T* v = nullptr;
  int num_tokens = 0;
  std::int64_t token_stride = 0;  ///< elements between tokens; 0 = num_kv_heads * head_dim
  std::int64_t head_stride = 0;   ///< elements between heads of one token; 0 = head_dim
};

/// @brief fp8-cache options of kv_append (leave them default for a 16/32-bit cache).
struct KvAppendOptions {
  KvScales scales{};  ///< quantisation scales, see core/kv_scales.hpp
  /// Optional device int: kv_append adds the number of NaN/Inf input elements it stored (it
  /// never resets it), so an engine can check one counter per step instead of the data.
  int* nonfinite_count = nullptr;
};

namespace detail {

/// A kv_append instance and the tokens per thread it was built for.
template <class TIn, class TCache>
struct KvAppendKernel {
  void (*kernel)(KvAppendParams<TIn, TCache>);
  int tokens_per_thread;
};

/// THE dispatch point of kv_append: (TIn, TCache) x {16-byte packets, single elements} x
/// {large, small} append. Type pairs: T -> T for float, __half, __nv_bfloat16 (a copy), and
/// each of them -> __nv_fp8_e4m3 (quantised). A packet is 16 bytes of the cache. A large
/// append moves 64 input bytes per thread in flight: 4 tokens of a 16-byte packet, 2 of the
/// 32-byte input packet of bf16/half -> fp8, 1 of float -> fp8 (4 tokens there took 104
/// registers on sm_90, 2 CTAs per SM, and spilled when capped at 64). A small one: 1 token.
template <class TIn, class TCache>
KvAppendKernel<TIn, TCache> select_kv_append_kernel(bool packets, bool large) {
  constexpr int kVec = 16 / sizeof(TCache);
  constexpr int kLarge = std::max(1, 64 / static_cast<int>(kVec * sizeof(TIn)));
  if (packets) {
    return large ? KvAppendKernel<TIn, TCache>{&kv_append_kernel<TIn, TCache, kVec, kLarge>, kLarge}
                 : KvAppendKernel<TIn, TCache>{&kv_append_kernel<TIn, TCache, kVec, 1>, 1};
  }
  return large ? KvAppendKernel<TIn, TCache>{&kv_append_kernel<TIn, TCache, 1, 4>, 4}
               : KvAppendKernel<TIn, TCache>{&kv_append_kernel<TIn, TCache, 1, 1>, 1};
}

/// Scales and the counter exist for an fp8 cache only; anything else passing them is a bug
/// (it would believe its cache quantised).
template <class TCache>
void check_kv_append_options(const KvAppendOptions& options) {
  const KvScales& s = options.scales;
  if constexpr (!std::is_same_v<TCache, __nv_fp8_e4m3>) {
    expects(s.k_scale == nullptr, "options.scales.k_scale", static_cast<const void*>(s.k_scale),
            "must be nullptr: scales apply to an fp8 cache only");
    expects(s.v_scale == nullptr, "options.scales.v_scale", static_cast<const void*>(s.v_scale),
            "must be nullptr: scales apply to an fp8 cache only");
    expects(options.nonfinite_count == nullptr, "options.nonfinite_count",
            static_cast<const void*>(options.nonfinite_count),
            "must be nullptr: counted for an fp8 cache only (other caches store NaN/Inf as is)");
  } else {
    expects(s.mode == KvScaleMode::kPerTensor || s.mode == KvScaleMode::kPerHead,
            "options.scales.mode", static_cast<int>(s.mode), "must be kPerTensor or kPerHead");
    expects(is_aligned_to(s.k_scale, alignof(float)), "options.scales.k_scale",
            static_cast<const void*>(s.k_scale), "must be float-aligned");
    expects(is_aligned_to(s.v_scale, alignof(float)), "options.scales.v_scale",
            static_cast<const void*>(s.v_scale), "must be float-aligned");
    expects(is_aligned_to(options.nonfinite_count, alignof(int)), "options.nonfinite_count",
            static_cast<const void*>(options.nonfinite_count), "must be int-aligned");
  }
}

}  // namespace detail

/**
 * @brief Writes the K and V rows of num_tokens new tokens into their cache slots, in one launch.
 *
 * Token t goes to slot s = slot_mapping[t] = block * block_size + offset: every (head, element)
 * of K row t into K(block, offset, head, element), likewise V. A negative slot is a padding
 * token: nothing is written for it. Nothing outside the targeted slots is written.
 * A 16/32-bit cache (TCache == TIn) receives the bits unchanged. An fp8 e4m3 cache receives
 * quantize_e4m3(x, 1 / scale) (core/fp8.cuh, core/kv_scales.hpp): round to nearest even,
 * finite overflow and +-Inf saturate to +-448, NaN stays NaN; NaN/Inf inputs are counted in
 * options.nonfinite_count when given.
 * Addresses that are all 16-byte multiples (pointers, strides, head_dim) take the packet path;
 * any other layout the element path (correct, slower). No host synchronisation.
 *
 * @param input new rows of TIn in {float, __half, __nv_bfloat16}, device.
 * @param slot_mapping device int32 [input.num_tokens]. Each slot must be negative or
 *        < num_blocks * block_size, and no slot may appear twice: device data, not read here
 *        (check the host copy with validate_slot_mapping; RADIX_ATTENTION_KERNEL_BOUNDS_CHECK
 *        traps on a slot past the pool).
 * @param cache writable cache (any strides PagedKvCacheView documents); TCache == TIn or
 *        __nv_fp8_e4m3. K and V must not overlap.
 * @param stream stream to launch on.
 * @param options fp8 scales and the non-finite counter (fp8 cache only).
 * @throw InvalidArgument on an invalid cache view or input, a null or misaligned pointer, or
 *        fp8 options with a non-fp8 cache; CudaError if the launch fails. Nothing is launched
 *        on a throw.
 */
template <class TIn, class TCache>
void kv_append(const KvAppendInput<TIn>& input, const std::int32_t* slot_mapping,
               const PagedKvCacheMutView<TCache>& cache, cudaStream_t stream,
               const KvAppendOptions& options = {}) {
  static_assert(is_supported_dtype_v<TIn>, "kv_append: TIn must be float, __half or __nv_bfloat16");
  static_assert(std::is_same_v<TCache, TIn> || std::is_same_v<TCache, __nv_fp8_e4m3>,
                "kv_append: the cache holds TIn or __nv_fp8_e4m3");
  detail::check_writable_cache(cache);
  const detail::NewRowStrides rows =
      detail::check_new_rows(input.k, input.v, input.num_tokens, input.token_stride,
                             input.head_stride, cache.num_kv_heads, cache.head_dim);
  detail::check_kv_append_options<TCache>(options);
  if (input.num_tokens == 0) return;
  expects(slot_mapping != nullptr, "slot_mapping", "nullptr", "must be a device pointer");
  expects(detail::is_aligned_to(slot_mapping, alignof(std::int32_t)), "slot_mapping",
          static_cast<const void*>(slot_mapping), "must be int32-aligned");

  constexpr int kPacket = 16 / sizeof(TCache);
  const bool packets = detail::cache_allows_packets(cache) &&
                       detail::rows_allow_packets(input.k, input.v, rows, cache.head_dim, kPacket);
  const int vec = packets ? kPacket : 1;
  detail::KvAppendParams<TIn, TCache> p{};
  p.k_in = input.k;
  p.v_in = input.v;
  p.in_token_stride = rows.token;
  p.in_head_stride = rows.head;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.cache_strides = resolved_strides(cache);
  p.slot_mapping = slot_mapping;
  p.num_tokens = input.num_tokens;
  const int chunks_per_head = cache.head_dim / vec;
  p.tensor_items = cache.num_kv_heads * chunks_per_head;  // < 2^29: checked
  p.chunks_per_head = detail::FastDivmod(chunks_per_head);
  p.block_size = detail::FastDivmod(cache.block_size);
  p.num_slots = cache.num_blocks * cache.block_size;  // fits: checked
  p.k_scale = options.scales.k_scale;
  p.v_scale = options.scales.v_scale;
  p.scale_head_step = options.scales.mode == KvScaleMode::kPerHead ? 1 : 0;
  p.nonfinite_count = options.nonfinite_count;

  const int row_items = 2 * p.tensor_items;
  const auto instance = detail::select_kv_append_kernel<TIn, TCache>(
      packets, detail::kv_write_is_large(input.num_tokens, row_items));
  const detail::KvWriteBlock block = detail::kv_write_block(row_items);
  const int per_cta = block.y * instance.tokens_per_thread;
  const dim3 grid(static_cast<unsigned>((input.num_tokens + per_cta - 1) / per_cta));
  detail::discard_stale_error();  // the launch rule of core/cuda_check.cuh
  instance.kernel<<<grid, dim3(block.x, block.y), 0, stream>>>(p);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
}

}  // namespace radix_attention
