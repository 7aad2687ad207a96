#pragma once
/// @file
/// Epilogue of the attention tile engine: normalises the accumulators of the mma mainloop,
/// stages the rows in shared memory (so the global stores are 16-byte and row-contiguous rather
/// than the fragments' scattered 4-byte pairs) and writes O in the element type and the
/// natural-log LSE.

#include <cuda_runtime.h>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/radix_tile_loader.cuh"

namespace radix_attention::detail {

/**
 * Writes ROWS normalised rows (16 per warp, from the warps' mma accumulators) of which the
 * first `rows` are real: row r goes to `out + out_offset(r)`, its LSE to `lse[lse_index(r)]`
 * (when lse is not null). `stage` is a free shared tile of ROWS x HEAD_DIM elements; the caller
 * has synchronised the threads so nobody reads it any more. `tid` in [0, THREADS) numbers the
 * writing threads (warp tid / 32 holds rows 16 warp ..) and `sync()` synchronises them.
 */
template <class T, int HEAD_DIM, int ROWS, int THREADS, class OutOffset, class LseIndex, class Sync>
__device__ __forceinline__ void store_mma_rows(const float (&o)[HEAD_DIM / 8][4],
                                               const WarpSoftmax& softmax, T* stage, T* out,
                                               float* lse, int rows, OutOffset&& out_offset,
                                               LseIndex&& lse_index, int tid, Sync&& sync) {
  static_assert(sizeof(T) == 2, "the mma epilogue stages 16-bit rows");
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int g = lane / 4;
  const int c = lane % 4;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + g + 8 * i;
    const float inv = softmax.inv_sum(i);
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) {
      *reinterpret_cast<unsigned*>(stage + swizzled_offset<T, HEAD_DIM>(r, f) + 2 * c) =
          DTypeTraits<T>::pack2(o[f][2 * i] * inv, o[f][2 * i + 1] * inv);
    }
    if (lse != nullptr && c == 0 && r < rows) lse[lse_index(r)] = softmax.lse(i);
  }
  sync();
  constexpr int kChunksPerRow = HEAD_DIM * 2 / 16;
  for (int e = tid; e < rows * kChunksPerRow; e += THREADS) {
    const int r = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    *reinterpret_cast<int4*>(out + out_offset(r) + chunk * 8) =
        *reinterpret_cast<const int4*>(stage + swizzled_offset<T, HEAD_DIM>(r, chunk));
  }
}

}  // namespace radix_attention::detail
