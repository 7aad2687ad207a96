#pragma once
/// @file
/// Paged prefill on Hopper warpgroup tensor cores (`wgmma`, sm_90a, 16-bit inputs): a CTA of
/// two warpgroups owns 128 rows of a tile (64 per warpgroup, the m64 of the instruction) and
/// streams 128-token K/V tiles through a cp.async pipeline into 128B-swizzled shared tiles,
/// K one tile ahead of V, so that each tile's softmax overlaps the next tile's Q K^T.
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

namespace radix_attention::detail {

template <class T, int HEAD_DIM>
struct PrefillWgmmaTraits {
  static constexpr int kWarpgroups = 2;
  static constexpr int kThreads = kWarpgroups * 128;
  static constexpr int kRows = kWarpgroups * 64;
  /// Tokens per K/V tile = N of the S product: 128 keeps S at 64 registers per thread (two
  /// score tiles are live at once: S of tile n in softmax while Q K^T of tile n + 1 runs).
  static constexpr int kTile = 128;
  /// K runs one tile ahead of V: K tiles n .. n + 2 and V tiles n, n + 1 are resident
  /// (head_dim 128: 32 KB Q + 3 x 32 KB K + 2 x 32 KB V = 192 KB).
  static constexpr int kKStages = 3;
  static constexpr int kVStages = 2;
  /// Token offsets of tiles n .. n + 2 (resolved a tile before their K copies are issued).
  static constexpr int kOffsetSlots = 3;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kTileBytes = std::size_t{kTile} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemK = std::size_t{kKStages} * kTileBytes;
  static constexpr std::size_t kSmemV = std::size_t{kVStages} * kTileBytes;
  static constexpr std::size_t kSmemOffsets = std::size_t{kOffsetSlots} * kTile * sizeof(long long);
  /// + 1024: the tiles start 1024-byte aligned (the swizzle pattern's period).
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemK + kSmemV + kSmemOffsets + 1024;
  static_assert(HEAD_DIM % 64 == 0, "Sw128 tiles are built of 64-element column blocks");
};

template <class T, int HEAD_DIM>
struct PrefillWgmmaSmem {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  static constexpr std::size_t kTileElems = Traits::kTileBytes / sizeof(T);
  T* q;
  T* k;
  T* v;
  long long* offsets;
  __device__ explicit PrefillWgmmaSmem(unsigned char* raw) {
    const unsigned pad = (1024u - (smem_addr(raw) & 1023u)) & 1023u;
    unsigned char* base = raw + pad;
    q = reinterpret_cast<T*>(base);
    k = reinterpret_cast<T*>(base + Traits::kSmemQ);
    v = reinterpret_cast<T*>(base + Traits::kSmemQ + Traits::kSmemK);
    offsets = reinterpret_cast<long long*>(base + Traits::kSmemQ + Traits::kSmemK + Traits::kSmemV);
  }
  __device__ T* k_stage(int tile) const { return k + (tile % Traits::kKStages) * kTileElems; }
  __device__ T* v_stage(int tile) const { return v + (tile % Traits::kVStages) * kTileElems; }
  __device__ long long* offsets_of(int tile) const {
    return offsets + (tile % Traits::kOffsetSlots) * Traits::kTile;
  }
};

/// Issues S[64 x kTile] = Q K^T for this warpgroup (committed, not waited for): k-steps of 16
/// walk 32 bytes along a 128-byte swizzled row, then on to the next 64-column block.
template <class T, int HEAD_DIM, int TILE, int ROWS>
__device__ __forceinline__ void wgmma_qk_issue(float (&s)[TILE / 2], unsigned q_addr,
                                               unsigned k_addr) {
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < HEAD_DIM / 16; ++k) {
    const unsigned in_row = (k % 4) * 32u;  // 16 elements = 32 bytes per k-step
    Wgmma<T, TILE>::ss(s, kmajor_descriptor(q_addr + (k / 4) * ROWS * 128u + in_row),
                       kmajor_descriptor(k_addr + (k / 4) * TILE * 128u + in_row), k > 0);
  }
  wgmma_commit();
}

/// Issues O[64 x HEAD_DIM] += P V (committed, not waited for): P from the exponentiated
/// scores, V MN-major; a k-step of 16 tokens is two 8-row groups (2048 bytes) down the tile.
template <class T, int HEAD_DIM, int TILE>
__device__ __forceinline__ void wgmma_pv_issue(float (&o)[HEAD_DIM / 2],
                                               const float (&s)[TILE / 8][4], unsigned v_addr) {
  unsigned a[TILE / 16][4];
#pragma unroll
  for (int kt = 0; kt < TILE / 16; ++kt) {
    a[kt][0] = DTypeTraits<T>::pack2(s[2 * kt][0], s[2 * kt][1]);
    a[kt][1] = DTypeTraits<T>::pack2(s[2 * kt][2], s[2 * kt][3]);
    a[kt][2] = DTypeTraits<T>::pack2(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    a[kt][3] = DTypeTraits<T>::pack2(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
  wgmma_fence_operands(o);
  wgmma_fence();
#pragma unroll
  for (int kt = 0; kt < TILE / 16; ++kt) {
    Wgmma<T, HEAD_DIM>::rs_tn(o, a[kt], mnmajor_descriptor(v_addr + kt * 2048u, TILE), 1);
  }
  wgmma_commit();
}

/**
 * The mainloop. Tile n's exponentiated scores P(n) are ready when its step starts; after one
 * barrier the step issues the copies of K(n + 2) and V(n + 1) (one cp.async group, waited for
 * a tile later), rescales O for tile n's maxima, issues Q K^T of tile n + 1 and P V of tile n,
 * and while P V runs on the tensor cores masks and exponentiates tile n + 1's scores (their
 * Q K^T retired first). No non-wgmma instruction writes an accumulator of an in-flight wgmma,
 * so ptxas keeps the two GEMMs asynchronous.
 *
 * Buffer reuse, all behind the barrier at the top of a step (every warpgroup has then waited
 * for its GEMMs of the step before): K(n + 2) overwrites K(n - 1) (its Q K^T ran in step
 * n - 2), V(n + 1) overwrites V(n - 1) (P V of step n - 1), tile n + 3's offsets overwrite
 * tile n's (read when V(n)'s copies were issued, in step n - 1).
 */
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_wgmma_mainloop(const PagedPrefillParams<T>& p,
                                                       const PrefillTile& t,
                                                       const PrefillWgmmaSmem<T, HEAD_DIM>& sm,
                                                       float (&o)[HEAD_DIM / 8][4],
                                                       WarpSoftmax& softmax) {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kRows = Traits::kRows;
  using KvTileLayout = Sw128Layout<T, kTile>;
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int num_tiles = (t.kv_end + kTile - 1) / kTile;
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(t.seq) * p.table_stride;
  auto resolve_offsets = [&](int tile) {
    if (tid < kTile) {
      sm.offsets_of(tile)[tid] = kv_token_offset(table_row, tile * kTile + tid, t.kv_end,
                                                 p.block_size, p.layout, t.kv_head);
    }
  };
  auto load_k = [&](int tile) {
    load_paged_tile<T, HEAD_DIM, kTile, Traits::kThreads, KvTileLayout>(sm.k_stage(tile), p.k_cache,
                                                                        sm.offsets_of(tile), tid);
  };
  auto load_v = [&](int tile) {
    load_paged_tile<T, HEAD_DIM, kTile, Traits::kThreads, KvTileLayout>(sm.v_stage(tile), p.v_cache,
                                                                        sm.offsets_of(tile), tid);
  };

  // Prologue: offsets of tiles 0-2; group {Q, K0}, group {K1, V0}; S of tile 0.
#pragma unroll
  for (int tile = 0; tile < Traits::kOffsetSlots; ++tile) resolve_offsets(tile);
  __syncthreads();
  load_q_rows<T, HEAD_DIM, kRows, Traits::kThreads, Sw128Layout<T, kRows>>(
      sm.q, p.q,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.q_row_stride, HEAD_DIM); }, tid);
  if (num_tiles > 0) load_k(0);
  cp_async_commit();
  if (num_tiles > 1) load_k(1);
  if (num_tiles > 0) load_v(0);
  cp_async_commit();

  int limit[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + lane / 4 + 8 * i;
    limit[i] = r < t.rows ? prefill_key_limit(p, t, (t.row0 + r) / p.group_size) : t.kv_end;
  }
  // This warpgroup's 64 rows start 64 x 128 bytes into every column block of Q.
  const unsigned q_addr = smem_addr(sm.q) + (warp / 4) * 64u * 128u;
  float(&o_flat)[HEAD_DIM / 2] = reinterpret_cast<float(&)[HEAD_DIM / 2]>(o);
  using Scores = float[kTile / 8][4];
  auto flat = [](Scores& s) -> float(&)[kTile / 2] {
    return reinterpret_cast<float(&)[kTile / 2]>(s);
  };
  Scores s_a, s_b;
  float alpha[2];
  if (num_tiles > 0) {
    cp_async_wait<1>();
    fence_proxy_async_shared();  // cp.async writes -> wgmma (async proxy) reads
    __syncthreads();
    wgmma_qk_issue<T, HEAD_DIM, kTile, kRows>(flat(s_a), q_addr, smem_addr(sm.k_stage(0)));
    wgmma_wait<0>();
    wgmma_fence_operands(flat(s_a));
    if (kTile > t.diag) mask_scores(s_a, 0, limit, lane);
    softmax.exponentiate(s_a, p.scale_log2, alpha);
  }

  // One step; `cur` holds P(n), `next` receives tile n + 1's scores, then P(n + 1).
  auto step = [&](int n, Scores& cur, Scores& next) {
    cp_async_wait<0>();  // this thread's K(n + 1), V(n)
    fence_proxy_async_shared();
    __syncthreads();  // everyone's copies landed; everyone finished step n - 1's GEMMs
    if (n + 2 < num_tiles) load_k(n + 2);
    if (n + 1 < num_tiles) load_v(n + 1);
    cp_async_commit();
    resolve_offsets(n + 3);
    WarpSoftmax::rescale(o, alpha);
    const bool has_next = n + 1 < num_tiles;
    if (has_next) {
      wgmma_qk_issue<T, HEAD_DIM, kTile, kRows>(flat(next), q_addr, smem_addr(sm.k_stage(n + 1)));
    }
    wgmma_pv_issue<T, HEAD_DIM, kTile>(o_flat, cur, smem_addr(sm.v_stage(n)));
    if (has_next) {
      wgmma_wait<1>();  // Q K^T (committed first) retired; P V still running
      wgmma_fence_operands(flat(next));
      if ((n + 2) * kTile > t.diag) mask_scores(next, (n + 1) * kTile, limit, lane);
      softmax.exponentiate(next, p.scale_log2, alpha);
    }
    wgmma_wait<0>();
    wgmma_fence_operands(o_flat);
  };
  for (int n = 0; n < num_tiles; n += 2) {
    step(n, s_a, s_b);
    if (n + 1 < num_tiles) step(n + 1, s_b, s_a);
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
