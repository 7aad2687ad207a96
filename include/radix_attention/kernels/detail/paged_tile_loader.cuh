#pragma once
/// @file
/// Tile loader of the attention tile engine: resolves the cache positions of a tile's tokens
/// through a block table (any block size, any K/V layout given by element strides) and fills
/// swizzled shared-memory tiles with 16-byte cp.async copies. Used by every kernel family whose
/// K/V tiles are gathered row by row (block size 1 needs a lookup per token; larger blocks
/// cost the same lookups, one per token, resolved a tile ahead so they add no latency).

#include <cstdint>

#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/radix_tile_loader.cuh"

namespace radix_attention::detail {

/// Element strides of a paged K/V array (see PagedKvCacheView), resolved on the host.
struct KvLayout {
  std::int64_t block_stride;
  std::int64_t token_stride;
  std::int64_t head_stride;
  int num_blocks;  ///< block ids must be in [0, num_blocks) (trapped under the bounds check)
};

/// Shared-tile layouts the loaders write, as element offsets of (row, 16-byte chunk):
/// RowSwizzled<T, HEAD_DIM>: rows of HEAD_DIM elements, chunk c of row r at c ^ (r % 8), which
///   ldmatrix reads without bank conflicts (the mma.sync mainloop).
/// Sw128Layout<T, ROWS>: HEAD_DIM / 64 column blocks of [ROWS][64], each row of a block 128
///   bytes with chunk c at c ^ (r % 8): the 128B-swizzle canonical layout wgmma reads (blocks
///   must start 1024-byte aligned).
template <class T, int HEAD_DIM>
struct RowSwizzled {
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return swizzled_offset<T, HEAD_DIM>(row, chunk);
  }
};
template <class T, int ROWS>
struct Sw128Layout {
  static_assert(sizeof(T) == 2, "128-byte rows of 64 16-bit elements");
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return (chunk / 8) * ROWS * 64 + row * 64 + (((chunk % 8) ^ (row % 8)) * 8);
  }
};

/// Element offset of token `t` (of block-table row `table_row`) for KV head `kv_head`, or -1
/// for a token at or past `end` (a row the loader zero-fills).
__device__ __forceinline__ long long kv_token_offset(const std::int32_t* __restrict__ table_row,
                                                     int t, int end, int block_size,
                                                     const KvLayout& layout, int kv_head) {
  if (t >= end) return -1;
  const int block = __ldg(table_row + t / block_size);
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(block >= 0 && block < layout.num_blocks);
  return static_cast<long long>(block) * layout.block_stride +
         static_cast<long long>(t % block_size) * layout.token_stride +
         static_cast<long long>(kv_head) * layout.head_stride;
}

/**
 * Issues the cp.async copies of one K/V tile (TILE tokens of one KV head) into swizzled shared
 * tiles [TILE][HEAD_DIM]; `offsets[row]` is the element offset of the row's head (from
 * kv_token_offset), -1 for a row past the range, which is zero-filled so it stays finite.
 */
template <class T, int HEAD_DIM, int TILE, int THREADS, class Layout = RowSwizzled<T, HEAD_DIM>,
          int UNROLL = TILE* HEAD_DIM* static_cast<int>(sizeof(T)) / 16 / THREADS>
__device__ __forceinline__ void load_paged_kv_tile(T* __restrict__ k_tile, T* __restrict__ v_tile,
                                                   const T* __restrict__ k_cache,
                                                   const T* __restrict__ v_cache,
                                                   const long long* __restrict__ offsets, int tid) {
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = HEAD_DIM / kElemsPerChunk;
  constexpr int kChunks = TILE * kChunksPerRow;
  static_assert(kChunks % THREADS == 0, "a K/V tile must split evenly over the CTA");
  // UNROLL (default: all) bounds the copies in flight per thread's registers, for callers
  // with few (a producer warpgroup).
#pragma unroll UNROLL
  for (int i = 0; i < kChunks / THREADS; ++i) {
    const int e = tid + i * THREADS;
    const int row = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    const long long offset = offsets[row];
    const bool valid = offset >= 0;
    const long long src = (valid ? offset : 0) + chunk * kElemsPerChunk;
    const int dst = Layout::offset(row, chunk);
    cp_async_16_zfill(k_tile + dst, k_cache + src, valid);
    cp_async_16_zfill(v_tile + dst, v_cache + src, valid);
  }
}

/**
 * Issues the cp.async copies of ROWS query rows into a swizzled tile [ROWS][HEAD_DIM].
 * `row_offset(r)` gives the element offset of row r's head in q, or -1 for a row past the
 * tile's end (zero-filled).
 */
template <class T, int HEAD_DIM, int ROWS, int THREADS, class Layout = RowSwizzled<T, HEAD_DIM>,
          class RowOffset>
__device__ __forceinline__ void load_q_rows(T* __restrict__ q_tile, const T* __restrict__ q,
                                            RowOffset&& row_offset, int tid) {
  constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(T));
  constexpr int kChunksPerRow = HEAD_DIM / kElemsPerChunk;
  for (int e = tid; e < ROWS * kChunksPerRow; e += THREADS) {
    const int row = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    const long long offset = row_offset(row);
    const bool valid = offset >= 0;
    cp_async_16_zfill(q_tile + Layout::offset(row, chunk),
                      q + (valid ? offset : 0) + chunk * kElemsPerChunk, valid);
  }
}

}  // namespace radix_attention::detail
