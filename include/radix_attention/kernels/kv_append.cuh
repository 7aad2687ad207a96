#pragma once
/// @file
/// The paged-cache writers: kv_append_kernel (new tokens' K and V into their slots, optionally
/// quantised to fp8 e4m3) and copy_blocks_kernel (the fork copy list). Host code calls
/// radix_attention::kv_append / copy_blocks (ops/kv_append.cuh), which validate the arguments
/// and pick the instance; this header is the kernels themselves.
///
/// Thread layout of both: a CTA is (row threads) x (token lanes) = 256 threads. A token's row
/// (K and V of every head) is split into packets; thread x moves packets x, x + blockDim.x,
/// ... of the row for `kTokens` tokens (threadIdx.y + u * blockDim.y), all loads of a step
/// before its stores, so a thread keeps kTokens x 16 bytes in flight.

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/fast_divmod.cuh"
#include "radix_attention/kernels/detail/kv_packet.cuh"

namespace radix_attention::detail {

/// Threads per CTA of both writers: 8 CTAs per SM keep every SM at full occupancy while a CTA
/// is short-lived (one row step), so a wave drains evenly.
inline constexpr int kKvWriteThreads = 256;

template <class TIn, class TCache>
struct KvAppendParams {
  const TIn* k_in = nullptr;  ///< [num_tokens] rows, in_token_stride / in_head_stride apart
  const TIn* v_in = nullptr;
  std::int64_t in_token_stride = 0;
  std::int64_t in_head_stride = 0;
  TCache* k_cache = nullptr;
  TCache* v_cache = nullptr;
  KvStrides cache_strides{};  ///< resolved (elements)
  const std::int32_t* slot_mapping = nullptr;
  int num_tokens = 0;
  int tensor_items = 0;        ///< packets of one token's K (or V) row: heads * chunks_per_head
  FastDivmod chunks_per_head;  ///< head_dim / packet elements
  FastDivmod block_size;       ///< slot -> (block, offset)
  int num_slots = 0;           ///< num_blocks * block_size (device bound check only)
  // fp8 cache only:
  const float* k_scale = nullptr;  ///< nullptr = 1
  const float* v_scale = nullptr;
  int scale_head_step = 0;         ///< 0: per tensor, 1: per kv head
  int* nonfinite_count = nullptr;  ///< optional: += number of NaN/Inf inputs
};

/// kVec: elements per packet (16 bytes of the cache, or 1 on the scalar path); kTokens: tokens
/// per thread (4 for large appends to keep loads in flight, 1 for a decode step to spread a few
/// tokens over many SMs).
///
/// A decode step is latency-bound (every thread moves one packet), so the order below keeps its
/// critical path at one memory round trip: the slot, the input rows and (fp8) the scale are all
/// loaded before any of them is waited on, and the index math between a load's return and its
/// store is a multiply and a shift (FastDivmod), not a division.
template <class TIn, class TCache, int kVec, int kTokens>
__global__ void __launch_bounds__(kKvWriteThreads) kv_append_kernel(KvAppendParams<TIn, TCache> p) {
  const int first = blockIdx.x * (blockDim.y * kTokens) + threadIdx.y;
  std::int32_t slot[kTokens];
#pragma unroll
  for (int u = 0; u < kTokens; ++u) {
    const int t = first + u * blockDim.y;
    slot[u] = t < p.num_tokens ? __ldg(p.slot_mapping + t) : -1;
  }
  const int row_items = 2 * p.tensor_items;
  int nonfinite = 0;
  for (int j = threadIdx.x; j < row_items; j += blockDim.x) {
    const KvRowItem item = kv_row_item(j, p.tensor_items, p.chunks_per_head, kVec);
    const TIn* in = (item.is_v ? p.v_in : p.k_in) + item.head * p.in_head_stride + item.elem;
    TCache* out =
        (item.is_v ? p.v_cache : p.k_cache) + item.head * p.cache_strides.head + item.elem;
    KvPacket<TIn, kVec> x[kTokens];
#pragma unroll
    for (int u = 0; u < kTokens; ++u) {
      const int t = first + u * blockDim.y;
      // Padding tokens' rows are loaded too (they exist): the load need not wait for the slot.
      if (t < p.num_tokens) x[u] = load_packet<TIn, kVec, true>(in + t * p.in_token_stride);
    }
    float inv_scale = 1.f;
    if constexpr (std::is_same_v<TCache, __nv_fp8_e4m3>) {
      // Loaded after the rows, so its round trip overlaps theirs instead of preceding it.
      const float* scale = item.is_v ? p.v_scale : p.k_scale;
      // Correctly rounded whatever the compile flags (--use_fast_math would make `1.f / s`
      // approximate), so the host model of core/kv_scales.hpp reproduces it.
      if (scale != nullptr) inv_scale = __frcp_rn(__ldg(scale + item.head * p.scale_head_step));
    }
#pragma unroll
    for (int u = 0; u < kTokens; ++u) {
      if (slot[u] < 0) continue;  // padding, or past num_tokens
      RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(slot[u] < p.num_slots);
      const int block = p.block_size.div(slot[u]);
      const int offset = p.block_size.mod(slot[u], block);
      store_packet(out + block * p.cache_strides.block + offset * p.cache_strides.token,
                   to_cache_packet<TCache>(x[u], inv_scale, nonfinite));
    }
  }
  if constexpr (std::is_same_v<TCache, __nv_fp8_e4m3>) {
    // Non-finite inputs are rare: the atomic is almost never issued.
    if (nonfinite != 0 && p.nonfinite_count != nullptr) atomicAdd(p.nonfinite_count, nonfinite);
  }
}

template <class T>
struct CopyBlocksParams {
  T* k = nullptr;
  T* v = nullptr;
  KvStrides cache_strides{};  ///< resolved (elements)
  /// Entry i at copies + i * copy_stride: (src, dst) whole blocks when copy_stride == 2,
  /// (src, dst, num_tokens) = BlockCopy when 3.
  const std::int32_t* copies = nullptr;
  int copy_stride = 2;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int chunks_per_head = 0;
};

/// grid = (copies, token groups): CTA (i, g) copies offsets [g * blockDim.y * kTokens, ...) of
/// copy i, striding by gridDim.y groups, so a single fork copy still spreads over many SMs.
template <class T, int kVec, int kTokens>
__global__ void __launch_bounds__(kKvWriteThreads) copy_blocks_kernel(CopyBlocksParams<T> p) {
  const std::int32_t* entry = p.copies + static_cast<std::int64_t>(blockIdx.x) * p.copy_stride;
  const std::int32_t src = entry[0];
  const std::int32_t dst = entry[1];
  const std::int32_t count = p.copy_stride >= 3 ? entry[2] : p.block_size;
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(src >= 0 && src < p.num_blocks);
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(dst >= 0 && dst < p.num_blocks);
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(count >= 0 && count <= p.block_size);
  const std::int64_t src_block = src * p.cache_strides.block;
  const std::int64_t dst_block = dst * p.cache_strides.block;
  const int row_items = 2 * p.num_kv_heads * p.chunks_per_head;
  const int group = blockDim.y * kTokens;
  for (int j = threadIdx.x; j < row_items; j += blockDim.x) {
    const KvRowItem item = kv_row_item(j, p.num_kv_heads, p.chunks_per_head, kVec);
    T* base = (item.is_v ? p.v : p.k) + item.head * p.cache_strides.head + item.elem;
    for (int first = blockIdx.y * group + threadIdx.y; first < count; first += gridDim.y * group) {
      KvPacket<T, kVec> x[kTokens];
#pragma unroll
      for (int u = 0; u < kTokens; ++u) {
        const int offset = first + u * blockDim.y;
        if (offset < count) {
          x[u] = load_packet<T, kVec, false>(base + src_block + offset * p.cache_strides.token);
        }
      }
#pragma unroll
      for (int u = 0; u < kTokens; ++u) {
        const int offset = first + u * blockDim.y;
        if (offset < count) store_packet(base + dst_block + offset * p.cache_strides.token, x[u]);
      }
    }
  }
}

}  // namespace radix_attention::detail
