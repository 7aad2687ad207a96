#pragma once
/// @file
/// Paged prefill on `mma.sync` tensor cores (sm_80+, 16-bit inputs): one CTA of 4 warps owns
/// 64 rows of a tile (16 per warp) and streams the K/V tiles its rows can see through a
/// multi-stage cp.async pipeline; each K/V tile is loaded once and applied to all 64 rows.
/// Composed from the tile engine: paged_tile_loader (gathers), mma_attention_warp (QK^T,
/// online softmax, PV), attention_epilogue (normalise, stage, store).
///
/// An fp8 e4m3 cache (TKv) runs here too (the wgmma kernels take 16-bit caches only): its
/// tiles are staged as row-major fp8 and each landed stage is dequantised into one 16-bit tile
/// the same mainloop reads (kernels/detail/fp8_dequant.cuh), at the cost of a conversion pass
/// and a barrier per tile. Correct, not tuned: prefill is compute-bound, and reading fp8 saves
/// it little.

#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <type_traits>

#include "radix_attention/kernels/detail/attention_epilogue.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/fp8_dequant.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM, class TKv = T>
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
  static constexpr bool kFp8 = std::is_same_v<TKv, __nv_fp8_e4m3>;
  static_assert(kFp8 || std::is_same_v<TKv, T>, "the cache holds T or fp8 e4m3");
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileElems * sizeof(TKv);
  /// fp8: the dequantised K and V tile, right after the stages.
  static constexpr std::size_t kSmemDequant = kFp8 ? std::size_t{2} * kTileElems * sizeof(T) : 0;
  static constexpr std::size_t kSmemOffsets = std::size_t{kStages} * kTile * sizeof(long long);
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemDequant + kSmemOffsets;
  /// Where the loader puts a staged chunk: swizzled for ldmatrix, or row-major fp8.
  using StageLayout =
      std::conditional_t<kFp8, Fp8StagingLayout<HEAD_DIM>, RowSwizzled<T, HEAD_DIM>>;
};

/// The CTA's shared memory: Q tile, K/V stages, (fp8) the dequantised tile, the stages' token
/// offsets.
template <class T, int HEAD_DIM, class TKv = T>
struct PrefillMmaSmem {
  using Traits = PrefillMmaTraits<T, HEAD_DIM, TKv>;
  T* q;
  TKv* kv;
  T* dequant;
  long long* offsets;
  __device__ explicit PrefillMmaSmem(unsigned char* base)
      : q(reinterpret_cast<T*>(base)),
        kv(reinterpret_cast<TKv*>(base + Traits::kSmemQ)),
        dequant(reinterpret_cast<T*>(base + Traits::kSmemQ + Traits::kSmemKV)),
        offsets(reinterpret_cast<long long*>(base + Traits::kSmemQ + Traits::kSmemKV +
                                             Traits::kSmemDequant)) {}
  __device__ TKv* k_stage(int s) const { return kv + s * 2 * Traits::kTileElems; }
  __device__ TKv* v_stage(int s) const { return kv + (s * 2 + 1) * Traits::kTileElems; }
};

/// Streams keys [0, t.kv_end) through the pipeline; leaves O (unnormalised) and the softmax
/// state of this warp's 16 rows in registers.
template <class T, int HEAD_DIM, class TKv>
__device__ __forceinline__ void prefill_mma_mainloop(const PagedPrefillParams<T, TKv>& p,
                                                     const PrefillTile& t,
                                                     const PrefillMmaSmem<T, HEAD_DIM, TKv>& sm,
                                                     float (&o)[HEAD_DIM / 8][4],
                                                     WarpSoftmax& softmax) {
  using Traits = PrefillMmaTraits<T, HEAD_DIM, TKv>;
  using StageLayout = typename Traits::StageLayout;
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
      load_paged_kv_tile<TKv, HEAD_DIM, kTile, Traits::kThreads, StageLayout>(
          sm.k_stage(s), sm.v_stage(s), p.k_cache, p.v_cache, sm.offsets + s * kTile, tid);
    }
    cp_async_commit();
  }
  // fp8: q . (k_scale K) = k_scale (q . K), so the K scale joins the softmax scale.
  float scale_log2 = p.scale_log2;
  if constexpr (Traits::kFp8) {
    scale_log2 *= load_kv_scale(p.k_scale, p.scale_head_step, t.kv_head);
  }

  // This lane's two rows (g, g + 8 of the warp's 16) and the keys each may see.
  int limit[2];
  prefill_lane_key_limits(p, t, warp, lane, limit);
  const MmaTileAddressing<T, HEAD_DIM> ad(lane);
  const unsigned q_slab = smem_addr(sm.q) + warp * 16 * ad.kRowBytes;
  constexpr unsigned kStageBytes = 2 * Traits::kTileElems * sizeof(TKv);
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
      load_paged_kv_tile<TKv, HEAD_DIM, kTile, Traits::kThreads, StageLayout>(
          sm.k_stage(s), sm.v_stage(s), p.k_cache, p.v_cache, sm.offsets + s * kTile, tid);
    }
    cp_async_commit();
    // Block-table lookups of tile n + kStages: issued now, stored after this tile's math.
    long long next_offset = -1;
    if (tid < kTile && n + kStages < num_tiles) next_offset = offset_of(n + kStages);

    unsigned stage_addr = smem_addr(sm.kv) + (n % kStages) * kStageBytes;
    if constexpr (Traits::kFp8) {
      // The previous tile's readers passed the barrier above, so the 16-bit tile is free.
      const auto* staged = reinterpret_cast<const unsigned char*>(sm.k_stage(n % kStages));
      using Dst = RowSwizzled<T, HEAD_DIM>;
      static_assert(kTile % 8 == 0, "K and V convert as one tile of 2 kTile rows");
      dequant_e4m3_tile<T, HEAD_DIM, 2 * kTile, Traits::kThreads, Dst>(staged, sm.dequant, tid);
      __syncthreads();
      stage_addr = smem_addr(sm.dequant);
    }
    constexpr unsigned kTileBytes = 2 * Traits::kTileElems * sizeof(T);  // K + V as read
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
    softmax.update(s, o, scale_log2);
    warp_pv<T, HEAD_DIM, kTile>(o, s, stage_addr + kTileBytes / 2, ad);

    if (tid < kTile) sm.offsets[(n % kStages) * kTile + tid] = next_offset;
  }
  cp_async_wait<0>();
  // fp8: P (v_scale V) = v_scale (P V).
  if constexpr (Traits::kFp8) {
    const float v_scale = load_kv_scale(p.v_scale, p.scale_head_step, t.kv_head);
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[f][e] *= v_scale;
    }
  }
  softmax.finish();
}

template <class T, int HEAD_DIM, class TKv = T>
__global__ void __launch_bounds__(PrefillMmaTraits<T, HEAD_DIM, TKv>::kThreads, 2)
    paged_prefill_mma_kernel(const PagedPrefillParams<T, TKv> p) {
  using Traits = PrefillMmaTraits<T, HEAD_DIM, TKv>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  // Tiles in reverse: under a causal mask the last rows see the most keys, so they start first.
  const PrefillTile t = prefill_tile(p, blockIdx.z, blockIdx.y,
                                     static_cast<int>(gridDim.x - 1 - blockIdx.x), Traits::kRows);
  if (t.rows <= 0) return;
  const PrefillMmaSmem<T, HEAD_DIM, TKv> sm(smem_raw);
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
