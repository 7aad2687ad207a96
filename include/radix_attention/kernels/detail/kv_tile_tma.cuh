#pragma once
/// @file
/// Tile loader of the attention tile engine by the Tensor Memory Accelerator (sm_90a): a paged
/// K or V cache is described to TMA as a 4-d tensor (head_dim, token in block, kv head, block)
/// through its element strides (any layout the views allow), and one K/V tile of TILE tokens
/// arrives as boxes of [box_rows tokens][64 elements] written in the 128B-swizzle layout wgmma
/// reads (Sw128Layout), completing on an mbarrier by transaction count. A box never crosses a
/// block (box_rows divides the block size), so each box costs one block-table read; the boxes of
/// a tile are issued by the lanes of one warp, one box row range per lane.

#include <cuda.h>  // CUtensorMap (a 128-byte, 64-byte-aligned value type; no driver call here)

#include <cstdint>

#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/hopper_sync.cuh"

namespace radix_attention::detail {

/// The tensor maps of a paged K and V cache (host-encoded, ops/detail/kv_tensor_maps.hpp) and
/// the token rows of one box: the largest of 8, 16, .., 128 that divides the block size.
struct KvTensorMaps {
  CUtensorMap k;
  CUtensorMap v;
  int box_rows;
  bool head_inner;  ///< dimension 1 is the kv head, 2 the token (the head stride is smaller)
};

#if RADIX_ATTENTION_HAS_TMA_KERNELS

/**
 * Issues the boxes of one TILE-token tile of `map` (starting at token `tile0` of the request
 * whose block-table row is `table_row`) into `tile`, a Sw128 [TILE][HEAD_DIM] shared tile, with
 * completion counted on `bar` (whose expected transaction bytes the caller announced). Called
 * by all lanes of one warp; lane j issues box j (TILE / box_rows <= 32 boxes). `block` is the
 * lane's block id for its box, read by the caller once for K and V.
 */
template <class T, int HEAD_DIM, int TILE>
__device__ __forceinline__ void issue_kv_tile_boxes(const CUtensorMap* map, T* tile,
                                                    std::uint64_t* bar, int block, int in_block,
                                                    int box_rows, int kv_head, bool head_inner,
                                                    int lane) {
  if (lane * box_rows >= TILE) return;
#pragma unroll
  for (int c = 0; c < HEAD_DIM / 64; ++c) {
    const std::int32_t coords[4] = {c * 64, head_inner ? kv_head : in_block,
                                    head_inner ? in_block : kv_head, block};
    T* dst = tile + c * TILE * 64 + lane * box_rows * 64;
    cuda::ptx::cp_async_bulk_tensor(cuda::ptx::space_cluster, cuda::ptx::space_global, dst, map,
                                    coords, bar);
  }
}

/// Block id and row within the block of lane's box of the tile starting at token `tile0`.
__device__ __forceinline__ void kv_box_position(const std::int32_t* __restrict__ table_row,
                                                int tile0, int block_size, int box_rows,
                                                int num_blocks, int lane, int& block,
                                                int& in_block) {
  const int token = tile0 + lane * box_rows;
  block = __ldg(table_row + token / block_size);
  in_block = token % block_size;
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(block >= 0 && block < num_blocks);
}

#endif  // RADIX_ATTENTION_HAS_TMA_KERNELS

}  // namespace radix_attention::detail
