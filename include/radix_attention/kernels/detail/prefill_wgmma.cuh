#pragma once
/// @file
/// Paged prefill on Hopper warpgroup tensor cores (`wgmma`, sm_90a, 16-bit inputs), warp
/// specialised as FlashAttention-3 describes: a producer warpgroup gathers 128-token K/V tiles
/// through the block table with cp.async into 128B-swizzled shared stages and signals them on
/// mbarriers; two consumer warpgroups of 64 rows each (the m64 of the instruction) compute
/// S = Q K^T from shared operands and O += P V with P from registers (the S accumulators
/// re-packed, the mma.sync fragment layout) and V transposed from shared memory. The consumers
/// take turns on the tensor cores (named barriers), so one warpgroup's softmax runs while the
/// other's products do. Softmax, masks and the epilogue are the tile engine's mma pieces: a
/// warp's wgmma accumulators are laid out as m16n8 accumulators of its 16 rows.

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "radix_attention/kernels/detail/attention_epilogue.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/hopper_sync.cuh"
#include "radix_attention/kernels/detail/mma_attention_warp.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"
#include "radix_attention/kernels/detail/wgmma.cuh"

namespace radix_attention::detail {

template <class T, int HEAD_DIM>
struct PrefillWgmmaTraits {
  static constexpr int kConsumers = 2;  ///< consumer warpgroups, 64 rows each
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kRows = kConsumers * 64;
  /// Tokens per K/V tile = N of the S product: 128 keeps S at 64 registers per thread.
  static constexpr int kTile = 128;
  /// 3 stages: head_dim 128 takes Q 32 KB + 3 x 64 KB, just inside the 227 KB a CTA may have.
  static constexpr int kStages = 3;
  /// Register split: 384 threads start at 168 (65536 / 384, rounded to 8); the producer needs
  /// few, so (168 - 40) x 128 registers move to the consumers: 168 + 64 = 232 each.
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kTileBytes = std::size_t{kTile} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileBytes;
  /// Barriers: q_full, full[kStages], empty[kStages]; then two tiles of token slots.
  static constexpr std::size_t kSmemBarriers = (1 + 2 * kStages) * sizeof(std::uint64_t);
  static constexpr std::size_t kSmemSlots = 2 * std::size_t{kTile} * sizeof(int);
  /// + 1024: the tiles start 1024-byte aligned (the swizzle pattern's period).
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemBarriers + kSmemSlots + 1024;
  static_assert(HEAD_DIM % 64 == 0, "Sw128 tiles are built of 64-element column blocks");
};

template <class T, int HEAD_DIM>
struct PrefillWgmmaSmem {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  T* q;
  T* kv;
  std::uint64_t* q_full;  ///< Q landed (producer threads arrive)
  std::uint64_t* full;    ///< [kStages] K/V stage landed
  std::uint64_t* empty;   ///< [kStages] both consumers are done with the stage (one per warp)
  int* slots;             ///< [2][kTile] token slots of the tile being copied and the next
  __device__ explicit PrefillWgmmaSmem(unsigned char* raw) {
    const unsigned pad = (1024u - (smem_addr(raw) & 1023u)) & 1023u;
    unsigned char* base = raw + pad;
    q = reinterpret_cast<T*>(base);
    kv = reinterpret_cast<T*>(base + Traits::kSmemQ);
    q_full = reinterpret_cast<std::uint64_t*>(base + Traits::kSmemQ + Traits::kSmemKV);
    full = q_full + 1;
    empty = full + Traits::kStages;
    slots = reinterpret_cast<int*>(empty + Traits::kStages);
  }
  __device__ T* k_stage(int s) const { return kv + s * 2 * (Traits::kTileBytes / sizeof(T)); }
  __device__ T* v_stage(int s) const { return kv + (s * 2 + 1) * (Traits::kTileBytes / sizeof(T)); }
};

/// Issues S[64 x TILE] = Q K^T for one warpgroup (committed, not waited for): k-steps of 16
/// walk 32 bytes along a 128-byte swizzled row, then on to the next 64-column block.
template <class T, int HEAD_DIM, int TILE, int ROWS>
__device__ __forceinline__ void wgmma_qk(float (&s)[TILE / 2], unsigned q_addr, unsigned k_addr) {
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
__device__ __forceinline__ void wgmma_pv(float (&o)[HEAD_DIM / 2], const float (&s)[TILE / 8][4],
                                         unsigned v_addr) {
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

#if RADIX_ATTENTION_HAS_WGMMA

/// Producer warpgroup: Q once, then every K/V tile of [0, t.kv_end) into the stage ring, as
/// far ahead as the ring allows. Each thread's copies of a tile arrive on the stage's `full`
/// barrier when they complete (cp.async.mbarrier.arrive.noinc), so the producer never waits
/// for its own copies, only for a stage the consumers have released.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_wgmma_produce(const PagedPrefillParams<T>& p,
                                                      const PrefillTile& t,
                                                      const PrefillWgmmaSmem<T, HEAD_DIM>& sm,
                                                      int ptid) {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  constexpr int kChunksPerRow = HEAD_DIM / 8;
  const int num_tiles = (t.kv_end + kTile - 1) / kTile;
  const std::int32_t* table_row =
      p.block_tables + static_cast<std::int64_t>(t.seq) * p.table_stride;

  // Token slots (block * block_size + offset, -1 past the range) of the next tile are looked
  // up while the current one is copied, one row per thread, so the block-table latency never
  // stalls the copies; two slot buffers, the producer warpgroup synchronised on barrier 4.
  auto slot_of = [&](int tile) {
    const int tok = tile * kTile + ptid;
    if (tok >= t.kv_end) return -1;
    return __ldg(table_row + tok / p.block_size) * p.block_size + tok % p.block_size;
  };
  sm.slots[ptid] = num_tiles > 0 ? slot_of(0) : -1;
  load_q_rows<T, HEAD_DIM, Traits::kRows, 128, Sw128Layout<T, Traits::kRows>>(
      sm.q, p.q,
      [&](int r) { return prefill_row_offset(t, r, p.group_size, p.q_row_stride, HEAD_DIM); },
      ptid);
  cuda::ptx::cp_async_mbarrier_arrive_noinc(sm.q_full);
  named_barrier_sync(4, 128);
  const long long head = static_cast<long long>(t.kv_head) * p.layout.head_stride;
  for (int n = 0; n < num_tiles; ++n) {
    const int s = n % kStages;
    const int next_slot = n + 1 < num_tiles ? slot_of(n + 1) : -1;
    if (n >= kStages) mbarrier_wait(sm.empty + s, ((n / kStages) + 1) & 1);
    T* k_tile = sm.k_stage(s);
    T* v_tile = sm.v_stage(s);
    const int* slots = sm.slots + (n & 1) * kTile;
#pragma unroll 4
    for (int i = 0; i < kTile * kChunksPerRow / 128; ++i) {
      const int e = ptid + i * 128;
      const int row = e / kChunksPerRow;
      const int chunk = e % kChunksPerRow;
      const int slot = slots[row];
      RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(slot < 0 || slot / p.block_size < p.layout.num_blocks);
      const long long src =
          slot >= 0 ? static_cast<long long>(slot / p.block_size) * p.layout.block_stride +
                          static_cast<long long>(slot % p.block_size) * p.layout.token_stride +
                          head + chunk * 8
                    : 0;
      const int dst = Sw128Layout<T, kTile>::offset(row, chunk);
      cp_async_16_zfill(k_tile + dst, p.k_cache + src, slot >= 0);
      cp_async_16_zfill(v_tile + dst, p.v_cache + src, slot >= 0);
    }
    cuda::ptx::cp_async_mbarrier_arrive_noinc(sm.full + s);
    sm.slots[((n + 1) & 1) * kTile + ptid] = next_slot;
    named_barrier_sync(4, 128);
  }
  // Leave only once every copy has landed (their barrier arrivals are in flight until then).
  asm volatile("cp.async.wait_all;\n" ::: "memory");
}

/// One consumer warpgroup (`cg` = 0 or 1, rows 64 cg ..): streams the tiles as they land.
/// Tensor-core turns alternate between the two warpgroups: before each product a warpgroup
/// waits on its named barrier (1 + cg), after issuing it releases the other's (2 - cg).
template <class T, int HEAD_DIM>
__device__ __forceinline__ void prefill_wgmma_consume(const PagedPrefillParams<T>& p,
                                                      const PrefillTile& t,
                                                      const PrefillWgmmaSmem<T, HEAD_DIM>& sm,
                                                      float (&o)[HEAD_DIM / 8][4],
                                                      WarpSoftmax& softmax, int cg, int ctid) {
  using Traits = PrefillWgmmaTraits<T, HEAD_DIM>;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  const int warp = ctid / 32;  // 0..7 over both consumer warpgroups: rows 16 warp ..
  const int lane = ctid % 32;
  const int num_tiles = (t.kv_end + kTile - 1) / kTile;
  int limit[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + lane / 4 + 8 * i;
    limit[i] = r < t.rows ? prefill_key_limit(p, t, (t.row0 + r) / p.group_size) : t.kv_end;
  }
  const unsigned q_addr = smem_addr(sm.q) + cg * 64u * 128u;
  float(&o_flat)[HEAD_DIM / 2] = reinterpret_cast<float(&)[HEAD_DIM / 2]>(o);
  auto my_turn = [&] { named_barrier_sync(1 + cg, 256); };
  auto your_turn = [&](bool last) {
    if (!(last && cg == 1)) named_barrier_arrive(2 - cg, 256);  // the last turn has no taker
  };
  if (cg == 1 && num_tiles > 0) named_barrier_arrive(1, 256);  // warpgroup 0 goes first

  mbarrier_wait(sm.q_full, 0);
  fence_proxy_async_shared();  // cp.async (generic proxy) writes -> wgmma (async proxy) reads
  for (int n = 0; n < num_tiles; ++n) {
    const int stage = n % kStages;
    mbarrier_wait(sm.full + stage, (n / kStages) & 1);
    fence_proxy_async_shared();
    float s[kTile / 8][4];
    float(&s_flat)[kTile / 2] = reinterpret_cast<float(&)[kTile / 2]>(s);
    my_turn();
    wgmma_qk<T, HEAD_DIM, kTile, Traits::kRows>(s_flat, q_addr, smem_addr(sm.k_stage(stage)));
    your_turn(false);
    wgmma_wait<0>();
    wgmma_fence_operands(s_flat);
    if ((n + 1) * kTile > t.diag) mask_scores(s, n * kTile, limit, lane);
    softmax.update(s, o, p.scale_log2);
    my_turn();
    wgmma_pv<T, HEAD_DIM, kTile>(o_flat, s, smem_addr(sm.v_stage(stage)));
    your_turn(n + 1 == num_tiles);
    wgmma_wait<0>();
    wgmma_fence_operands(o_flat);
    if (lane == 0) (void)cuda::ptx::mbarrier_arrive(sm.empty + stage);
  }
  softmax.finish();
}

#endif  // RADIX_ATTENTION_HAS_WGMMA

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
  if (threadIdx.x == 0) {
    cuda::ptx::mbarrier_init(sm.q_full, 128);
    for (int s = 0; s < Traits::kStages; ++s) {
      cuda::ptx::mbarrier_init(sm.full + s, 128);  // every producer thread
      cuda::ptx::mbarrier_init(sm.empty + s, 8);   // one per consumer warp
    }
  }
  __syncthreads();
  const int wg = threadIdx.x / 128;
  if (wg == 0) {
    setmaxnreg_dec<Traits::kProducerRegs>();
    prefill_wgmma_produce<T, HEAD_DIM>(p, t, sm, threadIdx.x);
  } else {
    setmaxnreg_inc<Traits::kConsumerRegs>();
    const int ctid = threadIdx.x - 128;
    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int f = 0; f < HEAD_DIM / 8; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
    WarpSoftmax softmax;
    prefill_wgmma_consume<T, HEAD_DIM>(p, t, sm, o, softmax, wg - 1, ctid);
    named_barrier_sync(3, 256);  // both consumers are done with Q: the epilogue reuses its tile
    store_mma_rows<T, HEAD_DIM, Traits::kRows, 256>(
        o, softmax, sm.q, p.out, p.lse, t.rows,
        [&](int r) { return prefill_row_offset(t, r, p.group_size, p.out_row_stride, HEAD_DIM); },
        [&](int r) { return prefill_lse_index(p, t, r); }, ctid,
        [] { named_barrier_sync(3, 256); });
  }
#else
  (void)p;
  __trap();  // never launched: the launcher selects this kernel only where sm_90a code exists
#endif
}

}  // namespace radix_attention::detail
