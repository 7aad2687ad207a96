#pragma once
/// @file
/// Host side of the TMA tile loader (kernels/detail/kv_tile_tma.cuh): encodes a paged K / V
/// cache as 4-d tensor maps (head_dim, token in block, kv head, block) with 128-byte swizzled
/// boxes of [box_rows][64]. The driver's encoder is reached through the runtime's
/// cudaGetDriverEntryPointByVersion, so the library still links against cudart alone.

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/detail/kv_tile_tma.cuh"

namespace radix_attention::detail {

/// The driver's cuTensorMapEncodeTiled, or nullptr where the driver does not provide it.
inline PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
#if !RADIX_ATTENTION_HAS_TMA_LOADER
  return nullptr;  // a toolkit without the TMA kernels: the launchers keep the cp.async ones
#else
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    const cudaError_t status = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn,
                                                                12000, cudaEnableDefault, &found);
    if (status != cudaSuccess || found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
#endif
}

/// Token rows of one box for `block_size`: the largest of max_rows (a power of two <= 128), ..,
/// 16, 8 dividing it; 0 when none does (block sizes that are not multiples of 8 take the
/// cp.async gathers instead).
constexpr int kv_box_rows(int block_size, int max_rows = 128) {
  for (int rows = max_rows; rows >= 8; rows /= 2) {
    if (block_size % rows == 0) return rows;
  }
  return 0;
}

/**
 * Encodes the K and V tensor maps of a 16-bit paged cache, boxes of at most `max_box_rows`
 * token rows (tiles that start on a multiple of it can come by TMA). Returns false (maps untouched)
 * when TMA cannot describe it: a block size that is not a multiple of 8, a stride or base address
 * that is not a multiple of 16 bytes, or no encoder in the driver; the caller then uses the
 * cp.async loaders. Host work only (no device call, no synchronisation): graph-capture safe.
 */
template <class T>
bool encode_kv_tensor_maps(const PagedKvCacheView<T>& cache, KvTensorMaps& maps,
                           int max_box_rows = 128) {
  static_assert(sizeof(T) == 2, "the TMA loader moves 16-bit K/V");
  const int box_rows = kv_box_rows(cache.block_size, max_box_rows);
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (box_rows == 0 || encode == nullptr || cache.head_dim % 64 != 0) return false;
  const KvStrides strides = resolved_strides(cache);
  const std::uint64_t elem = sizeof(T);
  // Dimensions in increasing stride order (NHD has the kv head inside the token), which is
  // the order the encoder is documented for; the box is [box_rows][64] either way.
  const bool head_inner = strides.head < strides.token;
  const cuuint64_t token_dim = static_cast<cuuint64_t>(cache.block_size);
  const cuuint64_t heads_dim = static_cast<cuuint64_t>(cache.num_kv_heads);
  const cuuint64_t token_bytes = static_cast<cuuint64_t>(strides.token) * elem;
  const cuuint64_t head_bytes = static_cast<cuuint64_t>(strides.head) * elem;
  const cuuint64_t dims[4] = {
      static_cast<cuuint64_t>(cache.head_dim), head_inner ? heads_dim : token_dim,
      head_inner ? token_dim : heads_dim, static_cast<cuuint64_t>(cache.num_blocks)};
  const cuuint64_t byte_strides[3] = {head_inner ? head_bytes : token_bytes,
                                      head_inner ? token_bytes : head_bytes,
                                      static_cast<cuuint64_t>(strides.block) * elem};
  for (const cuuint64_t s : byte_strides) {
    if (s % 16 != 0 || s >= (cuuint64_t{1} << 40)) return false;
  }
  const cuuint32_t rows = static_cast<cuuint32_t>(box_rows);
  const cuuint32_t box[4] = {64, head_inner ? 1u : rows, head_inner ? rows : 1u, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type = std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                             : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  auto one = [&](const T* base, CUtensorMap& map) {
    if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0) return false;
    return encode(&map, type, 4, const_cast<T*>(base), dims, byte_strides, box, element_strides,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
  };
  KvTensorMaps encoded{};
  if (!one(cache.k, encoded.k) || !one(cache.v, encoded.v)) return false;
  encoded.box_rows = box_rows;
  encoded.head_inner = head_inner;
  maps = encoded;
  return true;
}

}  // namespace radix_attention::detail
