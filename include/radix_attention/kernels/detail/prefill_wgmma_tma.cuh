#pragma once
/// @file
/// Paged prefill on Hopper (sm_90a, 16-bit inputs), warp specialised as FlashAttention-3
/// describes, for caches whose block size is a multiple of 8:
///  - a producer warpgroup (few registers) loads each tile's Q rows once (cp.async, two buffers,
///    so the next tile's rows land while this one runs) and streams
///    128-token K and V tiles into a ring of 128B-swizzled shared stages by TMA boxes of whole
///    block rows (kv_tile_tma.cuh), one warp issuing them, completion counted by transaction
///    bytes on the stage's mbarrier; the tile holding the end of the keys is gathered with
///    zero-filling cp.async instead, so rows past the context are zeros, never stale slots;
///  - two consumer warpgroups of 64 rows each take turns on the tensor cores (named barriers):
///    in its turn a warpgroup issues S = Q K^T of tile n and O += P V of tile n - 1 together,
///    then hands the turn over and exponentiates tile n while the other warpgroup's products
///    and its own P V run (FA3's ping-pong with intra-warpgroup overlap);
///  - the grid is persistent over the longest-first tile schedule (prefill_schedule.cuh): the
///    producer runs ahead into the next tile while the consumers finish the last one.
/// The softmax, masks and epilogue are the tile engine's mma pieces (mma_attention_warp.cuh,
/// attention_epilogue.cuh).

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "radix_attention/kernels/detail/attention_epilogue.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/hopper_sync.cuh"
#include "radix_attention/kernels/detail/kv_tile_tma.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"
#include "radix_attention/kernels/detail/prefill_schedule.cuh"
#include "radix_attention/kernels/detail/wgmma_attention_warpgroup.cuh"

/// 1: the two consumer warpgroups take turns on the tensor cores (named barriers); 0: each
/// issues its products as soon as its operands are ready (for comparisons).
#ifndef RADIX_ATTENTION_PREFILL_TURNS
#define RADIX_ATTENTION_PREFILL_TURNS 1
#endif

namespace radix_attention::detail {

/// What the TMA prefill kernel reads: the common parameters, the schedule, the tensor maps
/// (passed as a __grid_constant__ kernel parameter, where TMA may address them).
template <class T>
struct PagedPrefillTmaParams {
  PagedPrefillParams<T> base;
  PrefillSchedule schedule;
  KvTensorMaps maps;
};

template <class T, int HEAD_DIM>
struct PrefillTmaTraits {
  static constexpr int kConsumers = 2;  ///< consumer warpgroups, 64 rows each
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kRows = kConsumers * 64;
  /// Tokens per K/V tile = N of the S product: 128 keeps S at 64 registers per thread.
  static constexpr int kTile = 128;
  /// K and V stages each: head_dim 128 takes 2 x 32 KB of Q + 2 x 2 x 32 KB + the 32 KB output
  /// tile (226 KB); head_dim 64 has room for 4.
  static constexpr int kStages = HEAD_DIM <= 64 ? 4 : 2;
  /// 384 threads start at 168 registers (65536 / 384, rounded down to 8); the producer gives
  /// (168 - 40) x 128 to the consumers: 168 + 64 = 232 each.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  /// Two Q buffers: the producer loads the next tile's rows while the consumers still read
  /// this tile's (head_dim 128: 2 x 32 KB + 2 x 2 x 32 KB + 32 KB, just inside 227 KB).
  static constexpr int kQBuffers = 2;
  static constexpr std::size_t kTileBytes = std::size_t{kTile} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileBytes;
  /// The consumers' output tile, apart from Q, so the epilogue never waits for a Q buffer.
  static constexpr std::size_t kSmemOut = kSmemQ;
  /// q_full, q_empty [kQBuffers] each, then k_full, v_full, k_empty, v_empty [kStages] each.
  static constexpr std::size_t kSmemBarriers =
      TmaPipelineBarriers<kQBuffers, kStages>::kCount * sizeof(std::uint64_t);
  static constexpr std::size_t kSmemOffsets = std::size_t{kTile} * sizeof(long long);
  /// + 1024: the tiles start 1024-byte aligned (the swizzle pattern's period).
  static constexpr std::size_t kSmemBytes =
      kQBuffers * kSmemQ + kSmemKV + kSmemOut + kSmemBarriers + kSmemOffsets + 1024;
  static_assert(HEAD_DIM % 64 == 0, "Sw128 tiles are built of 64-element column blocks");
  static_assert(kSmemBytes <= 227 * 1024, "one CTA per SM must fit");

  /// Named barriers: the consumers' tensor-core turns, the producer warpgroup, the epilogues.
  static constexpr int kTurnBarrier = 1;  ///< + consumer index
  static constexpr int kProducerBarrier = 3;
  static constexpr int kEpilogueBarrier = 4;  ///< + consumer index
};

template <class T, int HEAD_DIM>
struct PrefillTmaSmem : TmaPipelineBarriers<PrefillTmaTraits<T, HEAD_DIM>::kQBuffers,
                                            PrefillTmaTraits<T, HEAD_DIM>::kStages> {
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  static constexpr int kQ = Traits::kQBuffers;
  T* q;  ///< kQ buffers of kRows x HEAD_DIM
  T* kv;
  T* out;
  long long* offsets;  ///< the gathered tile's row offsets (producer)
  __device__ explicit PrefillTmaSmem(unsigned char* raw) {
    const unsigned pad = (1024u - (smem_addr(raw) & 1023u)) & 1023u;
    unsigned char* base = raw + pad;
    q = reinterpret_cast<T*>(base);
    kv = reinterpret_cast<T*>(base + kQ * Traits::kSmemQ);
    out = reinterpret_cast<T*>(base + kQ * Traits::kSmemQ + Traits::kSmemKV);
    this->bars = reinterpret_cast<std::uint64_t*>(base + kQ * Traits::kSmemQ + Traits::kSmemKV +
                                                  Traits::kSmemOut);
    offsets = reinterpret_cast<long long*>(this->bars + this->kCount);
  }
  __device__ T* q_buffer(int b) const { return q + b * (Traits::kSmemQ / sizeof(T)); }
  __device__ T* k_stage(int s) const { return kv + s * 2 * (Traits::kTileBytes / sizeof(T)); }
  __device__ T* v_stage(int s) const { return kv + (s * 2 + 1) * (Traits::kTileBytes / sizeof(T)); }

#if RADIX_ATTENTION_HAS_TMA_KERNELS
  /// Thread 0, before anyone uses them: full barriers take one arrival (the producer's, plus
  /// the TMA transaction bytes), empty ones one per consumer warp.
  __device__ void init_barriers() const {
    this->init(1, 4 * Traits::kConsumers, 1, 4 * Traits::kConsumers);
  }
#endif
};

#if RADIX_ATTENTION_HAS_TMA_KERNELS

/// Producer, cp.async half: the tile holding the end of the keys (rows past it zero-filled),
/// by all 128 producer threads; published on both full barriers once every copy landed.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void produce_gathered_tile(const PagedPrefillParams<T>& p,
                                                      const PrefillTile& t,
                                                      const std::int32_t* table_row,
                                                      const PrefillTmaSmem<T, HEAD_DIM>& sm, int n,
                                                      int stage, int ptid) {
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  sm.offsets[ptid] =
      kv_token_offset(table_row, n * kTile + ptid, t.kv_end, p.block_size, p.layout, t.kv_head);
  named_barrier_sync(Traits::kProducerBarrier, 128);
  load_paged_kv_tile<T, HEAD_DIM, kTile, 128, Sw128Layout<T, kTile>, 2>(
      sm.k_stage(stage), sm.v_stage(stage), p.k_cache, p.v_cache, sm.offsets, ptid);
  cp_async_commit();  // wait_group covers committed groups only
  cp_async_wait<0>();
  fence_proxy_async_shared();  // generic-proxy copies -> the consumers' wgmma reads
  named_barrier_sync(Traits::kProducerBarrier, 128);
  if (ptid == 0) {
    mbarrier_arrive(sm.k_full(stage));
    mbarrier_arrive(sm.v_full(stage));
  }
}

/// Producer warpgroup: for each tile of this CTA, its Q rows once the consumers released the
/// previous ones, then every K / V tile of [0, t.kv_end) into the stage ring as far ahead as
/// the ring allows (`u` counts the stages used over the CTA's life, as the consumers do).
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_tma_produce(const PagedPrefillTmaParams<T>& tp,
                                                    const PrefillTmaSmem<T, HEAD_DIM>& sm,
                                                    int ptid) {
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  const PagedPrefillParams<T>& p = tp.base;
  const int warp = ptid / 32;
  const int lane = ptid % 32;
  const int box_rows = tp.maps.box_rows;
  int u = 0;
  int filled = 0;  // tiles whose Q rows were loaded
  for (int w = blockIdx.x; w < tp.schedule.num_items; w += gridDim.x) {
    const PrefillTile t = scheduled_prefill_tile(p, tp.schedule, w, Traits::kRows);
    if (t.rows <= 0 || t.kv_end <= 0) continue;  // the consumers write zeros for no keys
    const int qb = filled % Traits::kQBuffers;   // the buffer's last use was kQBuffers tiles ago
    if (filled >= Traits::kQBuffers) {
      mbarrier_wait(sm.q_empty(qb), ((filled / Traits::kQBuffers) + 1) & 1);
    }
    load_q_rows<T, HEAD_DIM, Traits::kRows, 128, Sw128Layout<T, Traits::kRows>>(
        sm.q_buffer(qb), p.q,
        [&](int r) { return prefill_row_offset(t, r, p.group_size, p.q_row_stride, HEAD_DIM); },
        ptid);
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async_shared();
    named_barrier_sync(Traits::kProducerBarrier, 128);
    if (ptid == 0) mbarrier_arrive(sm.q_full(qb));
    ++filled;

    const std::int32_t* table_row =
        p.block_tables + static_cast<std::int64_t>(t.seq) * p.table_stride;
    const int num_tiles = (t.kv_end + kTile - 1) / kTile;
    for (int n = 0; n < num_tiles; ++n, ++u) {
      const int stage = u % kStages;
      const unsigned parity = ((u / kStages) + 1) & 1;  // the release of the stage's last use
      if ((n + 1) * kTile > t.kv_end) {
        if (u >= kStages) {
          mbarrier_wait(sm.k_empty(stage), parity);
          mbarrier_wait(sm.v_empty(stage), parity);
        }
        produce_gathered_tile<T, HEAD_DIM>(p, t, table_row, sm, n, stage, ptid);
      } else if (warp == 0) {
        int block = 0;
        int in_block = 0;
        if (lane * box_rows < kTile) {
          kv_box_position(table_row, n * kTile, p.block_size, box_rows, p.layout.num_blocks, lane,
                          block, in_block);
        }
        // K, then V, each once its stage is free: announce the bytes, then the boxes.
        auto issue = [&](const CUtensorMap* map, T* tile, std::uint64_t* full,
                         std::uint64_t* empty) {
          if (u >= kStages) mbarrier_wait(empty, parity);
          if (lane == 0) mbarrier_arrive_expect_tx(full, Traits::kTileBytes);
          __syncwarp();
          issue_kv_tile_boxes<T, HEAD_DIM, kTile>(map, tile, full, block, in_block, box_rows,
                                                  t.kv_head, tp.maps.head_inner, lane);
        };
        issue(&tp.maps.k, sm.k_stage(stage), sm.k_full(stage), sm.k_empty(stage));
        issue(&tp.maps.v, sm.v_stage(stage), sm.v_full(stage), sm.v_empty(stage));
      }
    }
  }
}

/// A consumer warpgroup's view of the stage ring: waits for a stage and releases it (one
/// arrival per warp, after the warp's wgmma reads of it completed).
template <class T, int HEAD_DIM>
struct ConsumerRing {
  const PrefillTmaSmem<T, HEAD_DIM>& sm;
  int lane;
  static constexpr int kStages = PrefillTmaTraits<T, HEAD_DIM>::kStages;
  __device__ int stage(int u) const { return u % kStages; }
  __device__ unsigned parity(int u) const { return (u / kStages) & 1; }
  __device__ void wait_k(int u) const { mbarrier_wait(sm.k_full(stage(u)), parity(u)); }
  __device__ void wait_v(int u) const { mbarrier_wait(sm.v_full(stage(u)), parity(u)); }
  __device__ void release_k(int u) const {
    if (lane == 0) mbarrier_arrive(sm.k_empty(stage(u)));
  }
  __device__ void release_v(int u) const {
    if (lane == 0) mbarrier_arrive(sm.v_empty(stage(u)));
  }
};

/**
 * One consumer warpgroup (`cg` = 0 or 1, rows 64 cg ..) over one tile: turns alternate between
 * the two warpgroups (each waits on barrier kTurnBarrier + cg, then arrives on the other's).
 * Step n issues S_n = Q K_n and O += P_{n-1} V_{n-1} in one turn, waits for S_n only, releases
 * K_n, exponentiates S_n while the P V runs, then waits for it, rescales O and re-packs P.
 */
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_tma_consume_tile(
    const PagedPrefillParams<T>& p, const PrefillTile& t, const PrefillTmaSmem<T, HEAD_DIM>& sm,
    float (&o)[HEAD_DIM / 8][4], WarpSoftmax& softmax, int cg, int ctid, int u, int qb) {
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  const int warp = ctid / 32;  // 0..7 over both consumer warpgroups: rows 16 warp ..
  const int lane = ctid % 32;
  const int num_tiles = (t.kv_end + kTile - 1) / kTile;
  const ConsumerRing<T, HEAD_DIM> ring{sm, lane};
  int limit[2];
  prefill_lane_key_limits(p, t, warp, lane, limit);
  const unsigned q_addr = smem_addr(sm.q_buffer(qb)) + cg * 64u * 128u;
  float(&o_flat)[HEAD_DIM / 2] = reinterpret_cast<float(&)[HEAD_DIM / 2]>(o);
  auto my_turn = [&] {
    if constexpr (RADIX_ATTENTION_PREFILL_TURNS) named_barrier_sync(Traits::kTurnBarrier + cg, 256);
  };
  auto your_turn = [&] {
    if constexpr (RADIX_ATTENTION_PREFILL_TURNS) {
      named_barrier_arrive(Traits::kTurnBarrier + 1 - cg, 256);
    }
  };
  auto release_q = [&] {
    if (lane == 0) mbarrier_arrive(sm.q_empty(qb));
  };

  float s[kTile / 8][4];
  float(&s_flat)[kTile / 2] = reinterpret_cast<float(&)[kTile / 2]>(s);
  unsigned pa[kTile / 16][4];
  float alpha[2];

  ring.wait_k(u);
  my_turn();
  issue_qk<T, HEAD_DIM, kTile, Traits::kRows>(s_flat, q_addr, smem_addr(sm.k_stage(ring.stage(u))));
  your_turn();
  wgmma_wait<0>();
  wgmma_fence_operands(s_flat);
  ring.release_k(u);
  if (num_tiles == 1) release_q();
  if (kTile > t.diag) mask_scores(s, 0, limit, lane);
  softmax.exponentiate(s, p.scale_log2, alpha);
  pack_p<T, kTile>(pa, s);

  for (int n = 1; n < num_tiles; ++n) {
    ring.wait_k(u + n);
    ring.wait_v(u + n - 1);
    my_turn();
    issue_qk<T, HEAD_DIM, kTile, Traits::kRows>(s_flat, q_addr,
                                                smem_addr(sm.k_stage(ring.stage(u + n))));
    issue_pv<T, HEAD_DIM, kTile>(o_flat, pa, smem_addr(sm.v_stage(ring.stage(u + n - 1))));
    your_turn();
    wgmma_wait<1>();
    wgmma_fence_operands(s_flat);
    ring.release_k(u + n);
    if (n + 1 == num_tiles) release_q();
    if ((n + 1) * kTile > t.diag) mask_scores(s, n * kTile, limit, lane);
    softmax.exponentiate(s, p.scale_log2, alpha);
    wgmma_wait<0>();
    wgmma_fence_operands(o_flat);
    ring.release_v(u + n - 1);
    WarpSoftmax::rescale(o, alpha);
    pack_p<T, kTile>(pa, s);
  }
  ring.wait_v(u + num_tiles - 1);
  my_turn();
  issue_pv<T, HEAD_DIM, kTile>(o_flat, pa, smem_addr(sm.v_stage(ring.stage(u + num_tiles - 1))));
  your_turn();
  wgmma_wait<0>();
  wgmma_fence_operands(o_flat);
  ring.release_v(u + num_tiles - 1);
}

/// A consumer warpgroup over the CTA's tiles: the mainloop, then its 64 rows' epilogue through
/// its half of the output tile (so the producer can already refill Q).
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_tma_consume(const PagedPrefillTmaParams<T>& tp,
                                                    const PrefillTmaSmem<T, HEAD_DIM>& sm, int cg,
                                                    int ctid) {
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  const PagedPrefillParams<T>& p = tp.base;
  const int wg_tid = ctid % 128;
  // Warpgroup 0 takes the first turn: warpgroup 1 opens it, and after the last tile warpgroup
  // 0 takes the turn warpgroup 1 handed over last, so every arrival has a taker.
  if (RADIX_ATTENTION_PREFILL_TURNS && cg == 1) named_barrier_arrive(Traits::kTurnBarrier, 256);
  int u = 0;
  int filled = 0;
  for (int w = blockIdx.x; w < tp.schedule.num_items; w += gridDim.x) {
    const PrefillTile t = scheduled_prefill_tile(p, tp.schedule, w, Traits::kRows);
    if (t.rows <= 0) continue;
    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
    WarpSoftmax softmax;
    if (t.kv_end > 0) {
      const int qb = filled % Traits::kQBuffers;
      mbarrier_wait(sm.q_full(qb), (filled / Traits::kQBuffers) & 1);
      ++filled;
      prefill_tma_consume_tile<T, HEAD_DIM>(p, t, sm, o, softmax, cg, ctid, u, qb);
      u += (t.kv_end + kTile - 1) / kTile;
    }
    softmax.finish();
    const int row0 = cg * 64;
    named_barrier_sync(Traits::kEpilogueBarrier + cg, 128);  // the last tile's reads are done
    store_mma_rows<T, HEAD_DIM, 64, 128>(
        o, softmax, sm.out + row0 * HEAD_DIM, p.out, p.lse, min(64, t.rows - row0),
        [&](int r) {
          return prefill_row_offset(t, r + row0, p.group_size, p.out_row_stride, HEAD_DIM);
        },
        [&](int r) { return prefill_lse_index(p, t, r + row0); }, wg_tid,
        [&] { named_barrier_sync(Traits::kEpilogueBarrier + cg, 128); });
  }
  if (RADIX_ATTENTION_PREFILL_TURNS && cg == 0) named_barrier_sync(Traits::kTurnBarrier, 256);
}

#endif  // RADIX_ATTENTION_HAS_TMA_KERNELS

template <class T, int HEAD_DIM>
__global__ void __launch_bounds__(PrefillTmaTraits<T, HEAD_DIM>::kThreads, 1)
    paged_prefill_tma_kernel(const __grid_constant__ PagedPrefillTmaParams<T> tp) {
#if RADIX_ATTENTION_HAS_TMA_KERNELS
  using Traits = PrefillTmaTraits<T, HEAD_DIM>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const PrefillTmaSmem<T, HEAD_DIM> sm(smem_raw);
  if (threadIdx.x == 0) {
    sm.init_barriers();
    cuda::ptx::fence_mbarrier_init(cuda::ptx::sem_release, cuda::ptx::scope_cluster);
  }
  __syncthreads();
  // Broadcast from lane 0, the compiler knows the warpgroup index is warp-uniform and keeps the
  // addresses and wgmma descriptors derived from it in uniform registers.
  const int wg = __shfl_sync(0xffffffffu, static_cast<int>(threadIdx.x) / 128, 0);
  if (wg == 0) {
    setmaxnreg_dec<Traits::kProducerRegs>();
    prefill_tma_produce<T, HEAD_DIM>(tp, sm, threadIdx.x);
  } else {
    setmaxnreg_inc<Traits::kConsumerRegs>();
    prefill_tma_consume<T, HEAD_DIM>(tp, sm, wg - 1, threadIdx.x - 128);
  }
#else
  (void)tp;
  __trap();  // never launched: the launcher selects it only where sm_90a code and TMA exist
#endif
}

}  // namespace radix_attention::detail
