#pragma once
/// @file
/// What the cache writers (kv_append, copy_blocks) move per thread and step: a packet of N
/// elements that is either whole 16-byte words (the vector path: every address a multiple of
/// 16 bytes by the launcher's check) or one element (the scalar path for any other layout),
/// plus the conversion of a packet into an fp8 e4m3 cache and the decomposition of a token row
/// into per-thread items.

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/fp8.cuh"
#include "radix_attention/kernels/detail/fast_divmod.cuh"

namespace radix_attention::detail {

/// N elements of T. N == 1, or N * sizeof(T) a multiple of 16 (loaded as that many 16-byte
/// words, never wider: a 32- or 64-byte packet is only 16-byte aligned).
template <class T, int N>
struct alignas(N == 1 ? alignof(T) : 16) KvPacket {
  static_assert(N == 1 || (N * sizeof(T)) % 16 == 0, "a vector packet is whole 16-byte words");
  static constexpr int kWords = N == 1 ? 0 : static_cast<int>(N * sizeof(T) / 16);
  T e[N];
};

/// Loads a packet. kReadOnly: through the read-only (non-coherent) path, for the new K/V rows
/// that no thread writes; copy_blocks reads the cache it writes, so it loads coherently.
template <class T, int N, bool kReadOnly>
__device__ __forceinline__ KvPacket<T, N> load_packet(const T* src) {
  KvPacket<T, N> r;
  if constexpr (N == 1) {
    r.e[0] = *src;
  } else {
#pragma unroll
    for (int w = 0; w < KvPacket<T, N>::kWords; ++w) {
      const uint4* word = reinterpret_cast<const uint4*>(src) + w;
      reinterpret_cast<uint4*>(r.e)[w] = kReadOnly ? __ldg(word) : *word;
    }
  }
  return r;
}

template <class T, int N>
__device__ __forceinline__ void store_packet(T* dst, const KvPacket<T, N>& x) {
  if constexpr (N == 1) {
    *dst = x.e[0];
  } else {
#pragma unroll
    for (int w = 0; w < KvPacket<T, N>::kWords; ++w) {
      reinterpret_cast<uint4*>(dst)[w] = reinterpret_cast<const uint4*>(x.e)[w];
    }
  }
}

/// True when a float is NaN or +-Inf: one compare (NaN fails every ordered comparison).
__device__ __forceinline__ bool is_nonfinite(float x) { return !(fabsf(x) <= 3.40282347e38f); }

/// A packet of the cache element type from a packet of the input type. Same types: the bits
/// unchanged (a 16/32-bit cache is a plain copy, NaN payloads included). fp8 cache: every
/// element quantised by quantize_e4m3 with `inv_scale`; `nonfinite` counts NaN/Inf inputs.
template <class TCache, class TIn, int N>
__device__ __forceinline__ KvPacket<TCache, N> to_cache_packet(const KvPacket<TIn, N>& x,
                                                               float inv_scale, int& nonfinite) {
  if constexpr (std::is_same_v<TCache, TIn>) {
    return x;
  } else {
    static_assert(std::is_same_v<TCache, __nv_fp8_e4m3>, "conversion only into an fp8 cache");
    KvPacket<TCache, N> r;
    float f[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
      f[i] = DTypeTraits<TIn>::to_float(x.e[i]);
      nonfinite += is_nonfinite(f[i]) ? 1 : 0;
    }
    if constexpr (N == 1) {
      r.e[0].__x = quantize_e4m3(f[0], inv_scale);
    } else {
      static_assert(N % 2 == 0, "fp8 vector packets hold pairs");
#pragma unroll
      for (int i = 0; i < N / 2; ++i) {
        reinterpret_cast<__nv_fp8x2_storage_t*>(r.e)[i] =
            quantize_e4m3x2(f[2 * i], f[2 * i + 1], inv_scale);
      }
    }
    return r;
  }
}

/// One thread's item of a token row: a row is K then V, each num_kv_heads heads of
/// chunks_per_head packets, so item j in [0, 2 * heads * chunks) names (K or V, head, first
/// element of its packet).
struct KvRowItem {
  bool is_v;
  int head;
  int elem;
};

__device__ __forceinline__ KvRowItem kv_row_item(int j, int num_kv_heads, int chunks_per_head,
                                                 int packet_elems) {
  const int per_tensor = num_kv_heads * chunks_per_head;
  const bool is_v = j >= per_tensor;
  const int within = is_v ? j - per_tensor : j;
  const int head = within / chunks_per_head;
  return {is_v, head, (within - head * chunks_per_head) * packet_elems};
}

/// kv_row_item with the divisor fixed at launch: `tensor_items` = num_kv_heads * chunks_per_head
/// packets of one K (or V) row; one multiply-shift instead of a division (kv_append, whose
/// threads each decompose one item).
__device__ __forceinline__ KvRowItem kv_row_item(int j, int tensor_items,
                                                 const FastDivmod& chunks_per_head,
                                                 int packet_elems) {
  const bool is_v = j >= tensor_items;
  const int within = is_v ? j - tensor_items : j;
  const int head = chunks_per_head.div(within);
  return {is_v, head, chunks_per_head.mod(within, head) * packet_elems};
}

}  // namespace radix_attention::detail
