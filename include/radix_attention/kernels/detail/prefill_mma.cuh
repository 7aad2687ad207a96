#pragma once
/// @file
/// Paged prefill on `mma.sync` tensor cores (sm_80+, 16-bit inputs): one CTA of 4 warps owns
/// 64 rows of a tile (16 per warp) and streams the K/V tiles its rows can see through a
/// multi-stage cp.async pipeline; each K/V tile is loaded once and applied to all 64 rows.
/// Composed from the tile engine: paged_tile_loader (gathers), mma_attention_warp (QK^T,
/// online softmax, PV), attention_epilogue (normalise, stage, store).

#include <cuda_runtime.h>

#include <cstddef>

#include "radix_attention/kernels/detail/attention_epilogue.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM>
struct PrefillMmaTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = kWarps * 16;
  /// 64-token tiles keep a stage (K + V) at 32 KB for head_dim 128; head_dim 256 halves the
  /// tile so the score fragments (kTile / 2 registers) leave room for 128 accumulators.
  static constexpr int kTile = HEAD_DIM <= 128 ? 64 : 32;
  /// 3 stages where 2 CTAs per SM still fit (Q 16 KB + 3 x 32 KB at head_dim 128).
  static constexpr int kStages = HEAD_DIM <= 128 ? 3 : 2;
  /// Q fragments in registers up to head_dim 128 (32 registers); at 256 they are re-read.
  static constexpr bool kQInRegisters = HEAD_DIM <= 128;
  static constexpr int kTileElems = kTile * HEAD_DIM;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileElems * sizeof(T);
  static constexpr std::size_t kSmemOffsets = std::size_t{kStages} * kTile * sizeof(long long);
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemOffsets;
};

/// The CTA's shared memory: Q tile, K/V stages, the stages' token offsets.
template <class T, int HEAD_DIM>
struct PrefillMmaSmem {
  using Traits = PrefillMmaTraits<T, HEAD_DIM>;
  T* q;
  T* kv;
  long long* offsets;
  __device__ explicit PrefillMmaSmem(unsigned char* base)
      : q(reinterpret_cast<T*>(base)),
        kv(reinterpret_cast<T*>(base + Traits::kSmemQ)),
        offsets(reinterpret_cast<long long*>(base + Traits::kSmemQ + Traits::kSmemKV)) {}
  __device__ T* k_stage(int s) const { return kv + s * 2 * Traits::kTileElems; }
  __device__ T* v_stage(int s) const { return kv + (s * 2 + 1) * Traits::kTileElems; }
};

/// Streams keys [0, t.kv_end) through the pipeline; leaves O (unnormalised) and the softmax
/// state of this warp's 16 rows in registers.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_mma_mainloop(const PagedPrefillParams<T>& p,
                                                     const PrefillTile& t,
                                                     const PrefillMmaSmem<T, HEAD_DIM>& sm,
                                                     float (&o)[HEAD_DIM / 8][4],
                                                     WarpSoftmax& softmax) {
  using Traits = PrefillMmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int num_tiles = (t.kv_end + kTile - 1) / kTile;
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(t.seq) * p.table_stride;
  auto offset_of = [&](int tile) {
    return kv_token_offset(table_row, tile * kTile + tid, t.kv_end, p.block_size, p.layout,
                           t.kv_head);
  };

#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    if (tid < kTile) sm.offsets[s * kTile + tid] = offset_of(s);
  }
  __syncthreads();
  load_q_rows<T, HEAD_DIM, Traits::kRows, Traits::kThreads>(
      sm.q, p.q,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.q_row_stride, HEAD_DIM); }, tid);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) {
      load_paged_kv_tile<T, HEAD_DIM, kTile, Traits::kThreads>(
          sm.k_stage(s), sm.v_stage(s), p.k_cache, p.v_cache, sm.offsets + s * kTile, tid);
    }
    cp_async_commit();
  }

  // This lane's two rows (g, g + 8 of the warp's 16) and the keys each may see.
  int limit[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + lane / 4 + 8 * i;
    limit[i] = r < t.rows ? prefill_key_limit(p, t, (t.row0 + r) / p.group_size) : t.kv_end;
  }
  const MmaTileAddressing<T, HEAD_DIM> ad(lane);
  const unsigned q_slab = smem_addr(sm.q) + warp * 16 * ad.kRowBytes;
  constexpr unsigned kStageBytes = 2 * Traits::kTileElems * sizeof(T);
  unsigned qf[Traits::kQInRegisters ? HEAD_DIM / 16 : 1][4];

  for (int n = 0; n < num_tiles; ++n) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if constexpr (Traits::kQInRegisters) {
      if (n == 0) {
#pragma unroll
        for (int d = 0; d < HEAD_DIM / 16; ++d) load_a_fragment(qf[d], q_slab, ad, d);
      }
    }
    const int ahead = n + kStages - 1;
    if (ahead < num_tiles) {
      const int s = ahead % kStages;
      load_paged_kv_tile<T, HEAD_DIM, kTile, Traits::kThreads>(
          sm.k_stage(s), sm.v_stage(s), p.k_cache, p.v_cache, sm.offsets + s * kTile, tid);
    }
    cp_async_commit();
    // Block-table lookups of tile n + kStages: issued now, stored after this tile's math.
    long long next_offset = -1;
    if (tid < kTile && n + kStages < num_tiles) next_offset = offset_of(n + kStages);

    const unsigned stage_addr = smem_addr(sm.kv) + (n % kStages) * kStageBytes;
    float s[kTile / 8][4];
    warp_qk<T, HEAD_DIM, kTile>(s, stage_addr, ad, [&](int d, unsigned(&a)[4]) {
      if constexpr (Traits::kQInRegisters) {
#pragma unroll
        for (int j = 0; j < 4; ++j) a[j] = qf[d][j];
      } else {
        load_a_fragment(a, q_slab, ad, d);
      }
    });
    if ((n + 1) * kTile > t.diag) mask_scores(s, n * kTile, limit, lane);
    softmax.update(s, o, p.scale_log2);
    warp_pv<T, HEAD_DIM, kTile>(o, s, stage_addr + kStageBytes / 2, ad);

    if (tid < kTile) sm.offsets[(n % kStages) * kTile + tid] = next_offset;
  }
  cp_async_wait<0>();
  softmax.finish();
}

template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(PrefillMmaTraits<T, HEAD_DIM>::kThreads, 2)
    paged_prefill_mma_kernel(const PagedPrefillParams<T> p) {
  using Traits = PrefillMmaTraits<T, HEAD_DIM>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Tiles in reverse: under a causal mask the last rows see the most keys, so they start first.
  const PrefillTile t = prefill_tile(p, blockIdx.z, blockIdx.y,
                                     static_cast<int>(gridDim.x - 1 - blockIdx.x), Traits::kRows);
  if (t.rows <= 0) return;
  const PrefillMmaSmem<T, HEAD_DIM> sm(smem_raw);
  float o[HEAD_DIM / 8][4];
#pragma unroll
  for (int f = 0; f < HEAD_DIM / 8; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
  WarpSoftmax softmax;
  prefill_mma_mainloop<T, HEAD_DIM>(p, t, sm, o, softmax);
  __syncthreads();  // every warp is done with Q and the stages: the epilogue reuses Q's tile
  store_mma_rows<T, HEAD_DIM, Traits::kRows, Traits::kThreads>(
      o, softmax, sm.q, p.out, p.lse, t.rows,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.out_row_stride, HEAD_DIM); },
      [&](int r) { return prefill_lse_index(p, t, r); }, static_cast<int>(threadIdx.x),
      [] { __syncthreads(); });
}

}  // namespace radix_attention::detail
