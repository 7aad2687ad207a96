#pragma once
/// @file
/// Radix decode on the warp-specialised Hopper tile engine (sm_90a, 16-bit cache whose block
/// size is a multiple of 8): one persistent CTA per SM walks the plan's wide work list
/// (items of up to kRadixWideRows = 128 rows, plan/radix_plan_layout.hpp) x KV heads.
///  - A producer warpgroup loads each unit's Q rows (three warps) and streams its K/V tiles
///    (one warp; 64 tokens from the chunk's first token) into a ring of 128B-swizzled stages:
///    TMA boxes for tiles that lie whole inside the chunk, zero-filling cp.async gathers for the
///    tile holding its end. Every load completes on an mbarrier (TMA by transaction bytes,
///    cp.async through cp.async.mbarrier.arrive), so no producer warp waits for data, only for
///    free stages and Q slots, and they run ahead across units: the next private segment's
///    block-table reads and copies are in flight while the current one is computed.
///  - Two consumer warpgroups of 64 rows. A unit of more than 64 rows (a shared chunk) takes
///    both, over one K/V stream (the stage is read by both, loaded once); a unit of at most 64
///    rows (a private segment: one query x its GQA group) takes one, the two alternating, so
///    two short units are computed side by side. S = Q K^T and O += P V are wgmma (Q and K from
///    shared memory, P from registers), the P V of tile n - 1 running while tile n is
///    exponentiated (wgmma_attention_warpgroup.cuh); softmax and masks are the tile engine's.
///  - Each row's state is written as a float partial (normalised O, natural-log LSE) for
///    merge_states, which the launcher starts as a programmatic dependent of this grid.
/// A row's arithmetic does not depend on the unit's other rows or on which consumer computes it
/// (the same instructions over the same tiles of the chunk), so batch-invariant plans need no
/// narrower items here.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/hopper_sync.cuh"
#include "radix_attention/kernels/detail/kv_tile_tma.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/pdl.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"
#include "radix_attention/kernels/detail/wgmma_attention_warpgroup.cuh"

namespace radix_attention::detail {

/// What the TMA radix kernel reads: the radix kernels' parameters, the cache's element strides
/// (for the cp.async gathers) and its tensor maps (a __grid_constant__ kernel parameter).
template <class T>
struct RadixTmaParams {
  RadixKernelParams<T> base;
  KvLayout layout;
  KvTensorMaps maps;
};

template <class T, int HEAD_DIM>
struct RadixTmaTraits {
  static constexpr int kConsumers = 2;  ///< consumer warpgroups, 64 rows each
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kRows = kRadixWideRows;
  static_assert(kRows == kConsumers * 64, "a wide item fills both consumers' wgmma tiles");
  /// Tokens per K/V tile = N of the S product. 64 (the planner's chunk alignment) rather than
  /// the prefill kernel's 128: decode units are memory-bound, and finer stages keep more of
  /// the ring in flight while one is computed (a 64-token private segment fills its tile).
  static constexpr int kTile = kRadixKvTileTokens;
  /// Q slots: two per consumer warpgroup (the next unit's rows land while one is in use), 64
  /// rows each; a unit of more than 64 rows fills one slot of each consumer.
  static constexpr int kQSlots = 2 * kConsumers;
  static constexpr std::size_t kSmemQSlot = std::size_t{64} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kTileBytes = std::size_t{kTile} * HEAD_DIM * sizeof(T);
  /// K and V stages: what shared memory holds next to the Q slots (head_dim 128: 4 x 16 KB of Q
  /// + 5 x 32 KB of K/V = 224 KB; 64: 8 stages, 128 KB, as many bytes as it needs in flight).
  static constexpr int kStages = HEAD_DIM <= 64 ? 8 : 5;
  /// 384 threads start at 168 registers; the producer gives (168 - 56) x 128 to the consumers
  /// (its warps carry the next unit's item, and 40 spilled).
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 224;
  static constexpr std::size_t kSmemQ = std::size_t{kQSlots} * kSmemQSlot;
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileBytes;
  /// q_full, q_empty [kQSlots] each, then k_full, v_full, k_empty, v_empty [kStages] each.
  static constexpr std::size_t kSmemBarriers =
      TmaPipelineBarriers<kQSlots, kStages>::kCount * sizeof(std::uint64_t);
  /// + 1024: the tiles start 1024-byte aligned (the swizzle pattern's period).
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemBarriers + 1024;
  static_assert(HEAD_DIM % 64 == 0, "Sw128 tiles are built of 64-element column blocks");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit");
  /// Arrivals that complete a K / V full barrier: the K/V warp's lanes (for TMA, lane 0 also
  /// announcing the bytes; for a gather, each lane's copies through
  /// cp.async.mbarrier.arrive); a Q slot's: the three Q warps' copies.
  static constexpr int kFullArrivals = 32;
  static constexpr int kQFullArrivals = 96;
  /// Arrivals that release a stage: one per consumer warp (both warpgroups pass every stage
  /// use, in order, whether they compute it or not); a Q slot: one per warp of its consumer.
  static constexpr int kEmptyArrivals = 4 * kConsumers;
  static constexpr int kQEmptyArrivals = 4;
};

template <class T, int HEAD_DIM>
struct RadixTmaSmem : TmaPipelineBarriers<RadixTmaTraits<T, HEAD_DIM>::kQSlots,
                                          RadixTmaTraits<T, HEAD_DIM>::kStages> {
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  T* q;
  T* kv;
  __device__ explicit RadixTmaSmem(unsigned char* raw) {
    const unsigned pad = (1024u - (smem_addr(raw) & 1023u)) & 1023u;
    unsigned char* base = raw + pad;
    q = reinterpret_cast<T*>(base);
    kv = reinterpret_cast<T*>(base + Traits::kSmemQ);
    this->bars = reinterpret_cast<std::uint64_t*>(base + Traits::kSmemQ + Traits::kSmemKV);
  }
  /// Slot `k % 2` of consumer warpgroup `cg` (its k-th unit with keys).
  __device__ static int q_slot(int cg, int k) { return 2 * cg + (k & 1); }
  __device__ T* q_tile(int slot) const { return q + slot * (Traits::kSmemQSlot / sizeof(T)); }
  __device__ T* k_stage(int s) const { return kv + s * 2 * (Traits::kTileBytes / sizeof(T)); }
  __device__ T* v_stage(int s) const { return kv + (s * 2 + 1) * (Traits::kTileBytes / sizeof(T)); }

#if RADIX_ATTENTION_HAS_TMA_KERNELS
  __device__ void init_barriers() const {
    this->init(Traits::kQFullArrivals, Traits::kQEmptyArrivals, Traits::kFullArrivals,
               Traits::kEmptyArrivals);
  }
#endif
};

#if RADIX_ATTENTION_HAS_TMA_KERNELS

/// The calling thread's arrival on `bar` once all its earlier cp.async copies have landed
/// (counted against the barrier's expected arrivals: `.noinc`).
__device__ __forceinline__ void cp_async_mbarrier_arrive(std::uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_addr(bar))
               : "memory");
}

/// One unit of the persistent schedule: a wide item and a KV head.
struct RadixTmaUnit {
  RadixItem item;
  int kv_head;
  int num_tiles;
  bool pair;  ///< more than 64 rows: both consumer warpgroups, one K/V stream
};

template <class T>
__device__ __forceinline__ RadixTmaUnit radix_tma_unit(const RadixKernelParams<T>& p,
                                                       const RadixItem* items, int w, int tile) {
  RadixTmaUnit u;
  const int i = w / p.num_kv_heads;
  u.kv_head = w - i * p.num_kv_heads;
  u.item = load_radix_item(items + i);
  const int len = u.item.end - u.item.begin;
  u.num_tiles = len > 0 ? (len + tile - 1) / tile : 0;
  u.pair = u.item.rows > 64;
  return u;
}

/// Whether tile n of `it` comes by TMA: whole inside the chunk and starting on a box boundary
/// (boxes never cross a block). Otherwise it is gathered with zero-filling copies.
__device__ __forceinline__ bool radix_tile_by_tma(const RadixItem& it, int n, int tile,
                                                  int box_rows) {
  const int tile0 = it.begin + n * tile;
  return tile0 + tile <= it.end && tile0 % box_rows == 0;
}

/// Element offset of row r of unit `u` in q (or -1 past its rows).
template <class T>
__device__ __forceinline__ long long radix_tma_q_offset(const RadixKernelParams<T>& p,
                                                        const RadixTmaUnit& u, int r,
                                                        int head_dim) {
  const RadixRow rr = radix_row(p.plan, u.item.query_base, u.item.row_begin, u.item.rows, r,
                                p.group_size, u.kv_head);
  if (rr.partial < 0) return -1;
  const int query = __ldg(p.plan.chunk_queries + rr.partial);
  return static_cast<long long>(query) * p.q_row_stride +
         static_cast<long long>(rr.q_head) * head_dim;
}

/// K/V warp: tile `n` of unit `u` into `stage` by zero-filling cp.async (rows past the
/// chunk's end are zeros), K then V, each completing on its full barrier through the copies
/// themselves. Lane l copies 16-byte chunk l % 16 of two rows per step (two 256-byte row runs
/// per instruction at head_dim 128); each lane looks up the offsets of rows lane, lane + 32 and
/// the warp shares them by shuffles.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_tma_gather_tile(const RadixTmaParams<T>& tp,
                                                      const RadixTmaUnit& u,
                                                      const std::int32_t* table_row,
                                                      const RadixTmaSmem<T, HEAD_DIM>& sm, int n,
                                                      int stage, int lane) {
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kChunksPerRow = HEAD_DIM / 8;
  constexpr int kRowsPerStep = 32 / kChunksPerRow;  // head_dim 128: 2, 64: 4
  using Layout = Sw128Layout<T, kTile>;
  static_assert(kTile == 64, "two looked-up rows per lane");
  const RadixKernelParams<T>& p = tp.base;
  const int tile0 = u.item.begin + n * kTile;
  long long mine[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mine[h] = kv_token_offset(table_row, tile0 + lane + 32 * h, u.item.end, p.block_size, tp.layout,
                              u.kv_head);
  }
  const int chunk = lane % kChunksPerRow;
  auto copies = [&](T* tile, const T* cache) {
#pragma unroll 2  // the producer has 40 registers
    for (int i = 0; i < kTile / kRowsPerStep; ++i) {
      const int row = i * kRowsPerStep + lane / kChunksPerRow;
      // Every lane takes part in both shuffles; the row's owner is lane row % 32.
      const long long lo = __shfl_sync(0xffffffffu, mine[0], row % 32);
      const long long hi = __shfl_sync(0xffffffffu, mine[1], row % 32);
      const long long offset = row < 32 ? lo : hi;
      cp_async_16_zfill(tile + Layout::offset(row, chunk),
                        cache + (offset >= 0 ? offset : 0) + chunk * 8, offset >= 0);
    }
  };
  copies(sm.k_stage(stage), p.k_cache);
  cp_async_mbarrier_arrive(sm.k_full(stage));
  copies(sm.v_stage(stage), p.v_cache);
  cp_async_mbarrier_arrive(sm.v_full(stage));
}

/**
 * Producer warpgroup; its warps walk the CTA's units on their own and meet the consumers only
 * at the barriers:
 *  - warp 0 fills the K/V ring in order (a stage once its last use was released; `u` counts
 *    the stage uses over the CTA's life, as the consumers do): TMA boxes where the tile allows,
 *    else its own zero-filling gathers, reading the next unit's item while the current one is
 *    issued and each tile's block ids before it waits for the stage. One warp, so that every
 *    wait on a stage's barrier is for the phase right after the one it last saw (mbarrier waits
 *    go by phase parity);
 *  - warps 1-3 load each unit's Q rows into its consumers' next Q slots (the uses of each
 *    consumer's slots counted as the consumer counts them).
 */
template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_tma_produce(const RadixTmaParams<T>& tp,
                                                  const RadixTmaSmem<T, HEAD_DIM>& sm,
                                                  const RadixItem* items, int total, int ptid) {
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  const RadixKernelParams<T>& p = tp.base;
  const int warp = ptid / 32;
  const int lane = ptid % 32;
  const int box_rows = tp.maps.box_rows;
  const int first_w = static_cast<int>(blockIdx.x);
  const int step = static_cast<int>(gridDim.x);
  if (first_w >= total) return;

  if (warp >= 1) {  // Q rows
    const int qtid = ptid - 32;
    int units0 = 0;  // units with keys per consumer warpgroup (the uses of its Q slots)
    int units1 = 0;
    int singles = 0;  // units of one consumer so far (the k-th goes to warpgroup k % 2)
    for (int w = first_w; w < total; w += step) {
      const RadixTmaUnit unit = radix_tma_unit(p, items, w, kTile);
      const int owner = unit.pair ? -1 : (singles++ & 1);
      if (unit.num_tiles == 0) continue;  // the consumers write o = 0, lse = -inf
      // Rows 64 c .. of a pair go to consumer c's next slot; a single unit's to its owner's.
      const int first = unit.pair ? 0 : owner;
      const int last = unit.pair ? 1 : owner;
      for (int cg = first; cg <= last; ++cg) {
        const int k = cg == 0 ? units0++ : units1++;
        const int slot = RadixTmaSmem<T, HEAD_DIM>::q_slot(cg, k);
        if (k >= 2) mbarrier_wait(sm.q_empty(slot), ((k / 2) + 1) & 1);
        const int row0 = unit.pair ? 64 * cg : 0;
        load_q_rows<T, HEAD_DIM, 64, 96, Sw128Layout<T, 64>>(
            sm.q_tile(slot), p.q,
            [&](int r) { return radix_tma_q_offset(p, unit, row0 + r, HEAD_DIM); }, qtid);
        cp_async_mbarrier_arrive(sm.q_full(slot));
      }
    }
  } else {  // K / V
    int u = 0;
    RadixTmaUnit next = radix_tma_unit(p, items, first_w, kTile);
    for (int w = first_w; w < total; w += step) {
      const RadixTmaUnit unit = next;
      if (w + step < total) next = radix_tma_unit(p, items, w + step, kTile);
      const std::int32_t* table_row =
          p.block_tables + static_cast<std::int64_t>(unit.item.table_row) * p.block_table_stride;
      for (int n = 0; n < unit.num_tiles; ++n, ++u) {
        const bool tma = radix_tile_by_tma(unit.item, n, kTile, box_rows);
        const int stage = u % kStages;
        int block = 0;
        int in_block = 0;
        if (tma && lane * box_rows < kTile) {  // read before the wait: its latency hides
          kv_box_position(table_row, unit.item.begin + n * kTile, p.block_size, box_rows,
                          tp.layout.num_blocks, lane, block, in_block);
        }
        if (u >= kStages) {
          const unsigned parity = ((u / kStages) + 1) & 1;  // the release of the stage's last use
          mbarrier_wait(sm.k_empty(stage), parity);
          mbarrier_wait(sm.v_empty(stage), parity);
        }
        if (!tma) {
          radix_tma_gather_tile<T, HEAD_DIM>(tp, unit, table_row, sm, n, stage, lane);
          continue;
        }
        auto issue = [&](const CUtensorMap* map, T* tile, std::uint64_t* full) {
          if (lane == 0) {
            mbarrier_arrive_expect_tx(full, Traits::kTileBytes);
          } else {
            mbarrier_arrive(full);
          }
          issue_kv_tile_boxes<T, HEAD_DIM, kTile>(map, tile, full, block, in_block, box_rows,
                                                  unit.kv_head, tp.maps.head_inner, lane);
        };
        issue(&tp.maps.k, sm.k_stage(stage), sm.k_full(stage));
        issue(&tp.maps.v, sm.v_stage(stage), sm.v_full(stage));
      }
    }
  }
  cp_async_commit();   // (wait_group covers committed groups only)
  cp_async_wait<0>();  // no copy of this thread outlives the CTA's shared memory
}

/**
 * One consumer warpgroup over one unit's tiles (stage uses u .. u + num_tiles - 1), rows of
 * its Q buffer from `q_addr`: S_n = Q K_n and O += P_{n-1} V_{n-1} issued together, S_n waited
 * for and exponentiated while the P V runs; each stage released by one arrival per warp.
 */
template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_tma_consume_unit(
    const RadixTmaParams<T>& tp, const RadixTmaUnit& unit, const RadixTmaSmem<T, HEAD_DIM>& sm,
    int q_slot, int u, float (&o)[HEAD_DIM / 8][4], WarpSoftmax& softmax, int lane) {
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  const float scale_log2 = tp.base.scale_log2;
  const int box_rows = tp.maps.box_rows;
  const int len = unit.item.end - unit.item.begin;
  const int limit[2] = {len, len};
  const int num_tiles = unit.num_tiles;
  float(&o_flat)[HEAD_DIM / 2] = reinterpret_cast<float(&)[HEAD_DIM / 2]>(o);
  auto stage = [](int x) { return x % kStages; };
  auto parity = [](int x) { return static_cast<unsigned>((x / kStages) & 1); };
  auto arrive = [&](std::uint64_t* bar) {
    if (lane == 0) mbarrier_arrive(bar);
  };
  auto release_q = [&] {
    if (lane == 0) mbarrier_arrive(sm.q_empty(q_slot));
  };
  const unsigned q_addr = smem_addr(sm.q_tile(q_slot));
  // A gathered tile was written through the generic proxy: fence before wgmma reads it.
  auto wait_full = [&](std::uint64_t* bar, int x, int n) {
    mbarrier_wait(bar, parity(x));
    if (!radix_tile_by_tma(unit.item, n, kTile, box_rows)) fence_proxy_async_shared();
  };

  float s[kTile / 8][4];
  float(&s_flat)[kTile / 2] = reinterpret_cast<float(&)[kTile / 2]>(s);
  unsigned pa[kTile / 16][4];
  float alpha[2];

  wait_full(sm.k_full(stage(u)), u, 0);
  issue_qk<T, HEAD_DIM, kTile, 64>(s_flat, q_addr, smem_addr(sm.k_stage(stage(u))));
  wgmma_wait<0>();
  wgmma_fence_operands(s_flat);
  arrive(sm.k_empty(stage(u)));
  if (num_tiles == 1) release_q();
  if (kTile > len) mask_scores(s, 0, limit, lane);
  softmax.exponentiate(s, scale_log2, alpha);
  pack_p<T, kTile>(pa, s);

  for (int n = 1; n < num_tiles; ++n) {
    wait_full(sm.k_full(stage(u + n)), u + n, n);
    wait_full(sm.v_full(stage(u + n - 1)), u + n - 1, n - 1);
    issue_qk<T, HEAD_DIM, kTile, 64>(s_flat, q_addr, smem_addr(sm.k_stage(stage(u + n))));
    issue_pv<T, HEAD_DIM, kTile>(o_flat, pa, smem_addr(sm.v_stage(stage(u + n - 1))));
    wgmma_wait<1>();
    wgmma_fence_operands(s_flat);
    arrive(sm.k_empty(stage(u + n)));
    if (n + 1 == num_tiles) release_q();
    if ((n + 1) * kTile > len) mask_scores(s, n * kTile, limit, lane);
    softmax.exponentiate(s, scale_log2, alpha);
    wgmma_wait<0>();
    wgmma_fence_operands(o_flat);
    arrive(sm.v_empty(stage(u + n - 1)));
    WarpSoftmax::rescale(o, alpha);
    pack_p<T, kTile>(pa, s);
  }
  const int last = u + num_tiles - 1;
  wait_full(sm.v_full(stage(last)), last, num_tiles - 1);
  issue_pv<T, HEAD_DIM, kTile>(o_flat, pa, smem_addr(sm.v_stage(stage(last))));
  wgmma_wait<0>();
  wgmma_fence_operands(o_flat);
  arrive(sm.v_empty(stage(last)));
}

/// Writes a consumer warpgroup's rows of a unit (rows row0 + 16 warp + lane / 4 (+ 8)) as
/// float partial states straight from the accumulators (each quad of lanes writes 32
/// contiguous bytes of a row per fragment).
template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_tma_store_partials(const RadixKernelParams<T>& p,
                                                         const RadixTmaUnit& unit, int row0,
                                                         const float (&o)[HEAD_DIM / 8][4],
                                                         const WarpSoftmax& softmax, int warp,
                                                         int lane) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = row0 + warp * 16 + lane / 4 + 8 * i;
    const RadixRow rr = radix_row(p.plan, unit.item.query_base, unit.item.row_begin, unit.item.rows,
                                  r, p.group_size, unit.kv_head);
    if (rr.partial < 0) continue;
    const std::int64_t row = static_cast<std::int64_t>(rr.partial) * p.num_q_heads + rr.q_head;
    float* out = p.partial_out + row * HEAD_DIM + 2 * (lane % 4);
    const float inv = softmax.inv_sum(i);
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) {
      *reinterpret_cast<float2*>(out + f * 8) =
          make_float2(o[f][2 * i] * inv, o[f][2 * i + 1] * inv);
    }
    if (lane % 4 == 0) p.partial_lse[row] = softmax.lse(i);
  }
}

/// A consumer warpgroup over the CTA's units: both take the units of more than 64 rows
/// (rows 64 cg ..), and the others in turn (the k-th such unit of the CTA goes to warpgroup
/// k % 2); the other warpgroup's units it only passes through (their stages waited for and
/// released at once), so one computes while the other moves on to its next unit's tiles.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void radix_tma_consume(const RadixTmaParams<T>& tp,
                                                  const RadixTmaSmem<T, HEAD_DIM>& sm,
                                                  const RadixItem* items, int total, int cg,
                                                  int ctid) {
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  const int warp = (ctid % 128) / 32;
  const int lane = ctid % 32;
  int u = 0;
  int units = 0;    // this warpgroup's units with keys (its Q slots' uses)
  int singles = 0;  // units of one consumer so far, as the producer counts them
  for (int w = blockIdx.x; w < total; w += gridDim.x) {
    const RadixTmaUnit unit = radix_tma_unit(tp.base, items, w, kTile);
    const bool mine = unit.pair || (singles++ & 1) == cg;
    if (!mine) {
      // The other warpgroup's unit: pass its stage uses (wait, release) all the same, so this
      // warpgroup's waits stay one phase behind the ring (waits go by phase parity).
      for (int n = 0; n < unit.num_tiles; ++n, ++u) {
        const int s = u % Traits::kStages;
        const unsigned parity = (u / Traits::kStages) & 1;
        mbarrier_wait(sm.k_full(s), parity);
        if (lane == 0) mbarrier_arrive(sm.k_empty(s));
        mbarrier_wait(sm.v_full(s), parity);
        if (lane == 0) mbarrier_arrive(sm.v_empty(s));
      }
      continue;
    }
    const int row0 = unit.pair ? 64 * cg : 0;
    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
    WarpSoftmax softmax;
    if (unit.num_tiles > 0) {
      const int slot = RadixTmaSmem<T, HEAD_DIM>::q_slot(cg, units);
      mbarrier_wait(sm.q_full(slot), (units / 2) & 1);
      ++units;
      fence_proxy_async_shared();  // Q came by cp.async (generic proxy)
      radix_tma_consume_unit<T, HEAD_DIM>(tp, unit, sm, slot, u, o, softmax, lane);
      u += unit.num_tiles;
    }
    softmax.finish();
    radix_tma_store_partials<T, HEAD_DIM>(tp.base, unit, row0, o, softmax, warp, lane);
  }
}

#endif  // RADIX_ATTENTION_HAS_TMA_KERNELS

/**
 * @brief The TMA radix kernel: launch with RadixTmaTraits<T, HEAD_DIM>::kThreads threads,
 * kSmemBytes of dynamic shared memory, a grid of at most one CTA per SM. Units: the plan's
 * wide items x KV heads (p.base.total_work when >= 0, else from the plan's header).
 */
template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(RadixTmaTraits<T, HEAD_DIM>::kThreads, 1)
    radix_decode_tma_kernel(const __grid_constant__ RadixTmaParams<T> tp) {
#if RADIX_ATTENTION_HAS_TMA_KERNELS
  using Traits = RadixTmaTraits<T, HEAD_DIM>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const RadixTmaSmem<T, HEAD_DIM> sm(smem_raw);
  allow_dependent_launch();  // the merge may take the SMs this grid leaves free
  if (threadIdx.x == 0) {
    sm.init_barriers();
    cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
  }
  const RadixKernelParams<T>& p = tp.base;
  const RadixItem* items = p.plan.items + __ldg(p.plan.header + kHeaderNumItems);
  const int total = p.total_work >= 0 ? p.total_work
                                      : __ldg(p.plan.header + kHeaderNumWideItems) * p.num_kv_heads;
  __syncthreads();
  const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  if (wg == 0) {
    setmaxnreg_dec<Traits::kProducerRegs>();
    radix_tma_produce<T, HEAD_DIM>(tp, sm, items, total, threadIdx.x);
  } else {
    setmaxnreg_inc<Traits::kConsumerRegs>();
    radix_tma_consume<T, HEAD_DIM>(tp, sm, items, total, wg - 1, threadIdx.x - 128);
  }
#else
  (void)tp;
  __trap();  // never launched: the launcher selects it only where sm_90a code and TMA exist
#endif
}

}  // namespace radix_attention::detail
