#pragma once
/// @file
/// Shared-memory tiles of the radix kernel: swizzled [rows][head_dim] layouts for Q, K and V,
/// the 16-byte cp.async loads that fill them, and the block-table lookups ("slots") of upcoming
/// tokens, resolved one tile ahead so a block size of 1 adds no latency to the KV stream.

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/fp8_mma_fragments.cuh"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"

namespace radix_attention::detail {

/// Element offset of (row, 16-byte chunk `chunk`) in a tile of rows `HEAD_DIM` elements wide.
/// The chunk index is XOR-swizzled with the row's low 3 bits, so the 8 rows one `ldmatrix`
/// phase reads land in 8 different 16-byte bank groups (no conflicts) for every head_dim.
template <class T, int HEAD_DIM>
__device__ __forceinline__ int swizzled_offset(int row, int chunk) {
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
  return row * HEAD_DIM + ((chunk ^ (row & 7)) * kElemsPerChunk);
}

/// Where a loader puts 16-byte chunk `chunk` of staged row `row`: the swizzled tile for a
/// 16-bit cache, the fp8 fragment tile (Fp8FragmentTile) whose bytes the mainloop turns into
/// MMA operands in registers.
template <class T, int HEAD_DIM>
__device__ __forceinline__ int kv_stage_offset(int row, int chunk) {
  if constexpr (std::is_same_v<T, __nv_fp8_e4m3>) {
    return Fp8FragmentTile<HEAD_DIM>::offset(row, chunk);
  } else {
    return swizzled_offset<T, HEAD_DIM>(row, chunk);
  }
}

/**
 * Resolves the slot of tokens `[first, first + TILE)` of block-table row `table_row`, for
 * tokens below `end`; -1 beyond. Threads `0 .. TILE-1` each resolve one token.
 */
template <int TILE>
__device__ __forceinline__ int resolve_slot(const std::int32_t* __restrict__ table_row, int first,
                                            int end, int block_size, const KvSlotCode& code,
                                            int lane_token) {
  const int token = first + lane_token;
  return table_entry_slot(load_table_entry(table_row, token, end, block_size), token, end,
                          block_size, code);
}

/**
 * Issues the cp.async copies of one KV tile (K and V of TILE tokens of one KV head) into
 * swizzled shared tiles (fp8 fragment tiles for an fp8 cache, see kv_stage_offset): a
 * token's row starts `slot * token_stride + head_offset` elements into the cache (KvSlotCode's
 * slot_elems and kv_head * head_stride). Tokens whose slot is -1 are zero-filled (finite
 * values, masked later).
 */
template <class T, int HEAD_DIM, int TILE, int THREADS>
__device__ __forceinline__ void load_kv_tile(T* __restrict__ k_tile, T* __restrict__ v_tile,
                                             const T* __restrict__ k_cache,
                                             const T* __restrict__ v_cache,
                                             const int* __restrict__ slots,
                                             std::int64_t head_offset, std::int64_t token_stride,
                                             int tid) {
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = HEAD_DIM / kElemsPerChunk;
  constexpr int kChunks = TILE * kChunksPerRow;
  static_assert(kChunks % THREADS == 0, "a KV tile must split evenly over the CTA");
#pragma unroll
  for (int i = 0; i < kChunks / THREADS; ++i) {
    const int e = tid + i * THREADS;
    const int row = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    const int slot = slots[row];
    const bool valid = slot >= 0;
    const std::int64_t src = (valid ? static_cast<std::int64_t>(slot) * token_stride : 0) +
                             head_offset + chunk * kElemsPerChunk;
    const int dst = kv_stage_offset<T, HEAD_DIM>(row, chunk);
    cp_async_16_zfill(k_tile + dst, k_cache + src, valid);
    cp_async_16_zfill(v_tile + dst, v_cache + src, valid);
  }
}

}  // namespace radix_attention::detail
