#pragma once
/// @file
/// Paged prefill on Hopper warpgroup tensor cores (`wgmma`, sm_90a, 16-bit inputs): a CTA of
/// two warpgroups owns 128 rows of a tile (64 per warpgroup, the m64 of the instruction) and
/// streams 128-token K/V tiles through a cp.async pipeline into 128B-swizzled shared tiles.
/// S = Q K^T reads both operands from shared memory; O += P V takes P from registers (the S
/// accumulators re-packed, the same fragment layout as mma.sync) and V transposed from shared
/// memory. Softmax, masks and the epilogue are the tile engine's mma.sync pieces: the wgmma
/// accumulators of a warp are laid out exactly as m16n8 accumulators of its 16 rows.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "radix_attention/kernels/detail/attention_epilogue.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"
#include "radix_attention/kernels/detail/wgmma.cuh"
#include "radix_attention/kernels/detail/wgmma_attention_warpgroup.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM>
struct PrefillWgmmaTraits {
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = kWarpgroups * 128;
  static constexpr int kRows = kWarpgroups * 64;
  /// Tokens per K/V tile = N of the S product: 128 keeps S at 64 registers per thread.
  static constexpr int kTile = 128;
  /// 3 stages where they fit next to Q (head_dim 64: 16 + 3 x 32 KB), else 2 (128: 32 + 2 x 64).
  static constexpr int kStages = HEAD_DIM <= 64 ? 3 : 2;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kTileBytes = std::size_t{kTile} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileBytes;
  static constexpr std::size_t kSmemOffsets = std::size_t{kStages} * kTile * sizeof(long long);
  /// + 1024: the tiles start 1024-byte aligned (the swizzle pattern's period).
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemOffsets + 1024;
  static_assert(HEAD_DIM % 64 == 0, "Sw128 tiles are built of 64-element column blocks");
};

template <class T, int HEAD_DIM>
struct PrefillWgmmaSmem {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  T* q;
  T* kv;
  long long* offsets;
  __device__ explicit PrefillWgmmaSmem(unsigned char* raw) {
    const unsigned pad = (1024u - (smem_addr(raw) & 1023u)) & 1023u;
    unsigned char* base = raw + pad;
    q = reinterpret_cast<T*>(base);
    kv = reinterpret_cast<T*>(base + Traits::kSmemQ);
    offsets = reinterpret_cast<long long*>(base + Traits::kSmemQ + Traits::kSmemKV);
  }
  __device__ T* k_stage(int s) const { return kv + s * 2 * (Traits::kTileBytes / sizeof(T)); }
  __device__ T* v_stage(int s) const { return kv + (s * 2 + 1) * (Traits::kTileBytes / sizeof(T)); }
};

template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_wgmma_mainloop(const PagedPrefillParams<T>& p,
                                                       const PrefillTile& t,
                                                       const PrefillWgmmaSmem<T, HEAD_DIM>& sm,
                                                       float (&o)[HEAD_DIM / 8][4],
                                                       WarpSoftmax& softmax) {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  constexpr int kRows = Traits::kRows;
  using KvTileLayout = Sw128Layout<T, kTile>;
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
  auto load_stage = [&](int tile) {
    const int s = tile % kStages;
    load_paged_kv_tile<T, HEAD_DIM, kTile, Traits::kThreads, KvTileLayout>(
        sm.k_stage(s), sm.v_stage(s), p.k_cache, p.v_cache, sm.offsets + s * kTile, tid);
  };

#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    if (tid < kTile) sm.offsets[s * kTile + tid] = offset_of(s);
  }
  __syncthreads();
  load_q_rows<T, HEAD_DIM, kRows, Traits::kThreads, Sw128Layout<T, kRows>>(
      sm.q, p.q,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.q_row_stride, HEAD_DIM); }, tid);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) load_stage(s);
    cp_async_commit();
  }

  int limit[2];
  prefill_lane_key_limits(p, t, warp, lane, limit);
  // This warpgroup's 64 rows start 64 x 128 bytes into every column block of Q.
  const unsigned q_addr = smem_addr(sm.q) + (warp / 4) * 64u * 128u;
  float(&o_flat)[HEAD_DIM / 2] = reinterpret_cast<float(&)[HEAD_DIM / 2]>(o);

  for (int n = 0; n < num_tiles; ++n) {
    cp_async_wait<kStages - 2>();
    fence_proxy_async_shared();  // cp.async writes -> wgmma (async proxy) reads
    __syncthreads();
    if (n + kStages - 1 < num_tiles) load_stage(n + kStages - 1);
    cp_async_commit();
    long long next_offset = -1;
    if (tid < kTile && n + kStages < num_tiles) next_offset = offset_of(n + kStages);

    const int stage = n % kStages;
    float s[kTile / 8][4];
    wgmma_qk<T, HEAD_DIM, kTile, kRows>(reinterpret_cast<float(&)[kTile / 2]>(s), q_addr,
                                        smem_addr(sm.k_stage(stage)));
    if ((n + 1) * kTile > t.diag) mask_scores(s, n * kTile, limit, lane);
    softmax.update(s, o, p.scale_log2);
    wgmma_pv<T, HEAD_DIM, kTile>(o_flat, s, smem_addr(sm.v_stage(stage)));

    if (tid < kTile) sm.offsets[stage * kTile + tid] = next_offset;
  }
  cp_async_wait<0>();
  softmax.finish();
}

template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(PrefillWgmmaTraits<T, HEAD_DIM>::kThreads, 1)
    paged_prefill_wgmma_kernel(const PagedPrefillParams<T> p) {
#if RADIX_ATTENTION_HAS_WGMMA
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const PrefillTile t = prefill_tile(p, blockIdx.z, blockIdx.y,
                                     static_cast<int>(gridDim.x - 1 - blockIdx.x), Traits::kRows);
  if (t.rows <= 0) return;
  const PrefillWgmmaSmem<T, HEAD_DIM> sm(smem_raw);
  float o[HEAD_DIM / 8][4];
#pragma unroll
  for (int f = 0; f < HEAD_DIM / 8; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
  WarpSoftmax softmax;
  prefill_wgmma_mainloop<T, HEAD_DIM>(p, t, sm, o, softmax);
  __syncthreads();  // both warpgroups are done with Q: the epilogue stages rows in its tile
  store_mma_rows<T, HEAD_DIM, Traits::kRows, Traits::kThreads>(
      o, softmax, sm.q, p.out, p.lse, t.rows,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.out_row_stride, HEAD_DIM); },
      [&](int r) { return prefill_lse_index(p, t, r); }, static_cast<int>(threadIdx.x),
      [] { __syncthreads(); });
#else
  (void)p;
  __trap();  // never launched: the launcher selects this kernel only where sm_90a code exists
#endif
}

}  // namespace radix_attention::detail
