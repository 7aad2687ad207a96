#pragma once
/// @file
/// The tensor-core decode mainloop: one unit of up to 64 rows (query x query-head pairs of one
/// KV head: a radix plan's work item, or a paged-decode CTA's sequence) attends to one token
/// range of one block-table row (kernels/detail/decode_rows.cuh says where rows come from and
/// where results go). Each KV tile is loaded once into
/// shared memory (cp.async, multi-stage) and applied to every row: S = Q K^T and O += P V on
/// m16n8k16 tensor cores, online softmax in base 2, one partial state per row.
///
/// Warp layout: WARPS_M warps split the rows (16 per warp), WARPS_N = 4 / WARPS_M warps split
/// each tile's tokens. Few rows (a private segment: one query x its group) use all 4 warps on
/// the tokens and merge their states at the end, so no tensor-core work is wasted on idle warps.

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/decode_rows.cuh"
#include "radix_attention/kernels/detail/fp8_mma_fragments.cuh"
#include "radix_attention/kernels/detail/mma.cuh"
#include "radix_attention/kernels/detail/radix_tile_loader.cuh"
#include "radix_attention/kernels/detail/radix_traits.cuh"

namespace radix_attention::detail {

/// Shared memory of one CTA, carved from the dynamic buffer.
template <class T, int HEAD_DIM, class TKv = T, class TraitsT = RadixMmaTraits<T, HEAD_DIM, TKv>>
struct RadixMmaSmem {
  using Traits = TraitsT;
  T* q;            ///< [kRows][HEAD_DIM], swizzled
  TKv* kv;         ///< kStages x (K tile, V tile), swizzled (fp8: Fp8FragmentTile)
  int* slots;      ///< kStages x kTile physical slots
  float* scratch;  ///< aliases kv: cross-warp merge after the last tile

  __device__ explicit RadixMmaSmem(unsigned char* base)
      : q(reinterpret_cast<T*>(base)),
        kv(reinterpret_cast<TKv*>(base + Traits::kSmemQ)),
        slots(reinterpret_cast<int*>(base + Traits::kSmemQ + Traits::kSmemKV)),
        scratch(reinterpret_cast<float*>(base + Traits::kSmemQ)) {}
  __device__ TKv* k_stage(int s) const { return kv + s * 2 * Traits::kTileElems; }
  __device__ TKv* v_stage(int s) const { return kv + (s * 2 + 1) * Traits::kTileElems; }
};

/// Copies the unit's Q rows (zero for rows past its rows) into shared memory; for an fp8 cache
/// in the head_dim order of its K fragments (fp8_qk_dim), as 4-byte copies.
template <class T, int HEAD_DIM, int ROWS, class TKv, class Rows>
__device__ __forceinline__ void load_q_tile(T* q_smem, const T* q, const Rows& unit_rows, int tid) {
  using Traits = RadixMmaTraits<T, HEAD_DIM>;
  constexpr int kChunksPerRow = HEAD_DIM * static_cast<int>(sizeof(T)) / 16;
  for (int e = tid; e < ROWS * kChunksPerRow; e += Traits::kThreads) {
    const int row = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    const std::int64_t q_row = unit_rows.q_offset(row);
    const bool valid = q_row >= 0;
    const std::int64_t row_start = valid ? q_row : 0;
    T* dst = q_smem + swizzled_offset<T, HEAD_DIM>(row, chunk);
    if constexpr (std::is_same_v<TKv, __nv_fp8_e4m3>) {
      // Four pairs of the row in fp8_qk_dim order (pairs stay whole: see fp8_qk_q_chunk).
#pragma unroll
      for (int t = 0; t < 4; ++t) {
        cp_async_4_zfill(dst + 2 * t, q + row_start + fp8_qk_dim(8 * chunk + 2 * t), valid);
      }
    } else {
      const std::int64_t src = valid ? row_start + chunk * (16 / static_cast<int>(sizeof(T))) : 0;
      cp_async_16_zfill(dst, q + src, valid);
    }
  }
}

/// Executes one unit with WARPS_M warps on rows and 4 / WARPS_M warps on tokens. `p` is the
/// launch's parameter block (RadixKernelParams or PagedDecodeParams: q, the caches, their
/// addressing, block size, softmax scale and fp8 scales), `unit_rows` a decode_rows.cuh row map.
template <class T, int HEAD_DIM, int WARPS_M, class TKv, class Params, class Rows, class TraitsT>
__device__ __forceinline__ void radix_mma_item(const Params& p,
                                               const RadixMmaSmem<T, HEAD_DIM, TKv, TraitsT>& sm,
                                               const DecodeSpan& span, const Rows& unit_rows,
                                               int kv_head) {
  using Traits = TraitsT;
  static_assert(WARPS_M * 16 <= Traits::kRows, "the unit's rows must fit the shared Q tile");
  constexpr int kWarpsN = Traits::kWarps / WARPS_M;
  constexpr int kTile = Traits::kTile;
  constexpr int kStages = Traits::kStages;
  constexpr int kWarpTokens = kTile / kWarpsN;  // tokens of each tile one warp handles
  constexpr int kKSteps = HEAD_DIM / 16;
  constexpr int kSFrags = kWarpTokens / 8;
  constexpr int kOFrags = HEAD_DIM / 8;
  static_assert(kWarpTokens % 16 == 0, "P V needs 16-token k-steps per warp");

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int wm = warp % WARPS_M;
  const int wn = warp / WARPS_M;
  const int mi = lane / 8;  // ldmatrix: which 8x8 matrix this lane addresses
  const int mr = lane % 8;  // ... and which row of it

  const int begin = span.begin;
  const int end = span.end;
  const int num_tiles = (end - begin + kTile - 1) / kTile;
  const std::int32_t* table_row = span.table_row;
  const std::int64_t token_stride = p.kv.slot_elems;  // elements per slot (load_kv_tile)
  const std::int64_t head_offset = static_cast<std::int64_t>(kv_head) * p.kv.head_stride;

  // Prologue: slots of the first kStages tiles, then Q + the first kStages - 1 tiles in flight.
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    if (tid < kTile) {
      sm.slots[s * kTile + tid] =
          resolve_slot<kTile>(table_row, begin + s * kTile, end, p.block_size, p.kv, tid);
    }
  }
  __syncthreads();
  load_q_tile<T, HEAD_DIM, WARPS_M * 16, TKv>(sm.q, p.q, unit_rows, tid);
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < num_tiles) {
      load_kv_tile<TKv, HEAD_DIM, kTile, Traits::kThreads>(sm.k_stage(s), sm.v_stage(s), p.k_cache,
                                                           p.v_cache, sm.slots + s * kTile,
                                                           head_offset, token_stride, tid);
    }
    cp_async_commit();
  }
  // fp8: q . (k_scale K) = k_scale (q . K), so the K scale joins the softmax scale.
  float scale_log2 = p.scale_log2;
  if constexpr (Traits::kFp8) {
    scale_log2 *= load_kv_scale(p.k_scale, p.scale_head_step, kv_head);
  }

  float o[kOFrags][4];
#pragma unroll
  for (int f = 0; f < kOFrags; ++f) o[f][0] = o[f][1] = o[f][2] = o[f][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY};
  float l[2] = {0.f, 0.f};
  // Fragment addresses. Row r of a swizzled tile keeps 16-byte chunk c at c ^ (r & 7); every
  // lane's rows are = its ldmatrix row (mr) mod 8, and chunk 2d + b (b in {0, 1}) equals
  // 2d ^ b, so the physical chunk is 2d ^ (b ^ mr): one lane constant XOR a compile-time step.
  constexpr unsigned kRowBytes = HEAD_DIM * sizeof(T);
  const unsigned q_addr = smem_addr(sm.q) + (wm * 16 + (mi % 2) * 8 + mr) * kRowBytes;
  const unsigned q_x = (mi / 2) ^ mr;
  const unsigned k_lane = (wn * kWarpTokens + (mi / 2) * 8 + mr) * kRowBytes;
  const unsigned k_x = (mi % 2) ^ mr;
  const unsigned v_lane = (wn * kWarpTokens + (mi % 2) * 8 + mr) * kRowBytes;
  const unsigned v_x = (mi / 2) ^ mr;
  const unsigned kv_addr = smem_addr(sm.kv);
  constexpr unsigned kStageBytes = 2 * Traits::kTileElems * sizeof(T);  // 16-bit stages

  // Block id of tile kStages's token `tid`, its slot stored into the ring at the end of
  // iteration 0.
  int next_block =
      tid < kTile && kStages < num_tiles
          ? load_table_entry(table_row, begin + kStages * kTile + tid, end, p.block_size)
          : -1;
  unsigned qf[Traits::kQInRegisters ? kKSteps : 1][4];
  auto load_q_frag = [&](unsigned(&a)[4], int d) { ldmatrix_x4(a, q_addr + ((2 * d) ^ q_x) * 16); };

  for (int n = 0; n < num_tiles; ++n) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    if constexpr (Traits::kQInRegisters) {
      if (n == 0) {
#pragma unroll
        for (int d = 0; d < kKSteps; ++d) load_q_frag(qf[d], d);
      }
    }
    // Refill the stage consumed in the previous iteration; slots were resolved a tile ago.
    const int ahead = n + kStages - 1;
    if (ahead < num_tiles) {
      const int s = ahead % kStages;
      load_kv_tile<TKv, HEAD_DIM, kTile, Traits::kThreads>(sm.k_stage(s), sm.v_stage(s), p.k_cache,
                                                           p.v_cache, sm.slots + s * kTile,
                                                           head_offset, token_stride, tid);
    }
    cp_async_commit();
    // Block-table reads for tile n + kStages + 1: issued now, their registers first read when
    // the slots are stored at the end of the next iteration, so two tiles of math cover the
    // read, at block size 1 a DRAM miss per tile (a one-tile lead cost 3 % at bf16 and
    // 12-20 % at fp8, whose tiles are shorter).
    int further_block = -1;
    if (tid < kTile && n + kStages + 1 < num_tiles) {
      further_block =
          load_table_entry(table_row, begin + (n + kStages + 1) * kTile + tid, end, p.block_size);
    }
    const int stage = n % kStages;
    const unsigned k_addr = kv_addr + stage * kStageBytes + k_lane;
    const unsigned v_addr = kv_addr + stage * kStageBytes + kStageBytes / 2 + v_lane;
    const int warp_row0 = wn * kWarpTokens;  // first tile row (token) of this warp
    // fp8: this warp's first staged K and V rows (the stage landed at the barrier above).
    const auto* k_bytes =
        reinterpret_cast<const unsigned char*>(sm.k_stage(stage)) + warp_row0 * HEAD_DIM;
    const auto* v_bytes =
        reinterpret_cast<const unsigned char*>(sm.v_stage(stage)) + warp_row0 * HEAD_DIM;

    // S = Q K^T for this warp's 16 rows x kWarpTokens tokens.
    float s[kSFrags][4];
#pragma unroll
    for (int f = 0; f < kSFrags; ++f) s[f][0] = s[f][1] = s[f][2] = s[f][3] = 0.f;
    auto qk_step = [&](const unsigned(&a)[4], int d) {
#pragma unroll
      for (int kt = 0; kt < kWarpTokens / 16; ++kt) {
        unsigned b[4];
        ldmatrix_x4(b, k_addr + kt * 16 * kRowBytes + ((2 * d) ^ k_x) * 16);
        mma_m16n8k16<T>(s[2 * kt], a, b[0], b[1]);
        mma_m16n8k16<T>(s[2 * kt + 1], a, b[2], b[3]);
      }
    };
    if constexpr (Traits::kFp8) {
      static_assert(kWarpTokens % 8 == 0, "a warp's rows start on a swizzle period");
      fp8_qk<T, HEAD_DIM, kWarpTokens>(s, k_bytes, lane, [&](int d, unsigned(&a)[4]) {
        if constexpr (Traits::kQInRegisters) {
          a[0] = qf[d][0], a[1] = qf[d][1], a[2] = qf[d][2], a[3] = qf[d][3];
        } else {
          load_q_frag(a, d);
        }
      });
    } else {
#pragma unroll
      for (int d = 0; d < kKSteps; ++d) {
        if constexpr (Traits::kQInRegisters) {
          qk_step(qf[d], d);
        } else {
          unsigned a[4];
          load_q_frag(a, d);
          qk_step(a, d);
        }
      }
    }

    // Mask tokens past the chunk's end (only the last tile has any).
    const int tok0 = begin + n * kTile + warp_row0;
    if (begin + (n + 1) * kTile > end) {
#pragma unroll
      for (int f = 0; f < kSFrags; ++f) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          if (tok0 + f * 8 + 2 * (lane % 4) + (e & 1) >= end) s[f][e] = -INFINITY;
        }
      }
    }

    // Online softmax (base 2): rows g (i = 0) and g + 8 (i = 1) of the warp's fragment.
    float alpha[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int f = 0; f < kSFrags; ++f) mx = fmaxf(mx, fmaxf(s[f][2 * i], s[f][2 * i + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[i], mx * scale_log2);
      // A warp that has seen only masked tokens keeps m = -inf; subtract 0 then (no NaN).
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[i] = exp2f(m[i] - m_use);
      m[i] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int f = 0; f < kSFrags; ++f) {
        s[f][2 * i] = exp2f(fmaf(s[f][2 * i], scale_log2, -m_use));
        s[f][2 * i + 1] = exp2f(fmaf(s[f][2 * i + 1], scale_log2, -m_use));
        sum += s[f][2 * i] + s[f][2 * i + 1];
      }
      l[i] = l[i] * alpha[i] + sum;
    }
    // Once the running maxima settle, most tiles leave every row's max unchanged (alpha = 1):
    // skip the accumulator rescale then (a warp-uniform branch).
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int f = 0; f < kOFrags; ++f) {
        o[f][0] *= alpha[0];
        o[f][1] *= alpha[0];
        o[f][2] *= alpha[1];
        o[f][3] *= alpha[1];
      }
    }

    // O += P V: the S accumulators are already laid out as the A fragments of P.
#pragma unroll
    for (int kt = 0; kt < kWarpTokens / 16; ++kt) {
      unsigned a[4];
      a[0] = DTypeTraits<T>::pack2(s[2 * kt][0], s[2 * kt][1]);
      a[1] = DTypeTraits<T>::pack2(s[2 * kt][2], s[2 * kt][3]);
      a[2] = DTypeTraits<T>::pack2(s[2 * kt + 1][0], s[2 * kt + 1][1]);
      a[3] = DTypeTraits<T>::pack2(s[2 * kt + 1][2], s[2 * kt + 1][3]);
      if constexpr (Traits::kFp8) {
        // Columns of o come out in fp8_pv_dim order; the stores below restore head_dim order.
        fp8_pv_16<T, HEAD_DIM>(o, a, v_bytes + kt * 16 * HEAD_DIM, lane);
      } else {
#pragma unroll
        for (int dn = 0; dn < HEAD_DIM / 16; ++dn) {
          unsigned b[4];
          ldmatrix_x4_trans(b, v_addr + kt * 16 * kRowBytes + ((2 * dn) ^ v_x) * 16);
          mma_m16n8k16<T>(o[2 * dn], a, b[0], b[1]);
          mma_m16n8k16<T>(o[2 * dn + 1], a, b[2], b[3]);
        }
      }
    }

    if (tid < kTile) {
      sm.slots[((n + kStages) % kStages) * kTile + tid] = table_entry_slot(
          next_block, begin + (n + kStages) * kTile + tid, end, p.block_size, p.kv);
    }
    next_block = further_block;
  }

  // fp8: P (v_scale V) = v_scale (P V).
  if constexpr (Traits::kFp8) {
    const float v_scale = load_kv_scale(p.v_scale, p.scale_head_step, kv_head);
#pragma unroll
    for (int f = 0; f < kOFrags; ++f) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o[f][e] *= v_scale;
    }
  }
  // Row sums were accumulated per lane; the quad of lanes sharing a row completes them.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
    l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
  }
  const int g = lane / 4;
  const int c = lane % 4;

  if constexpr (kWarpsN == 1) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const std::int64_t target = unit_rows.target(wm * 16 + g + 8 * i);
      if (target < 0) continue;
      // A unit without tokens (an empty context or split) stores zeros and LSE -inf.
      const float inv = l[i] > 0.f ? 1.f / l[i] : 0.f;
      if constexpr (Traits::kFp8) {
        store_fp8_pv_row<HEAD_DIM>(o, i, lane, inv, [&](int d, const float(&v)[4]) {
          unit_rows.template store<4>(target, d, v);
        });
      } else {
#pragma unroll
        for (int f = 0; f < kOFrags; ++f) {
          const float two[2] = {o[f][2 * i] * inv, o[f][2 * i + 1] * inv};
          unit_rows.template store<2>(target, f * 8 + 2 * c, two);
        }
      }
      if (c == 0) unit_rows.store_lse(target, natural_lse(m[i], l[i]));
    }
  } else {
    // Token-split warps: park each warp's (m, l, O) in the drained KV stages, then combine.
    cp_async_wait<0>();
    __syncthreads();
    constexpr int kStride = Traits::kScratchStride;
    float* o_s = sm.scratch;                                   // [warp][16][kStride]
    float* ml_s = sm.scratch + Traits::kWarps * 16 * kStride;  // [warp][16][2]
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int r = g + 8 * i;
      if constexpr (Traits::kFp8) {
        float* row_s = o_s + (warp * 16 + r) * kStride;
        store_fp8_pv_row<HEAD_DIM>(o, i, lane, 1.f, [&](int d, const float(&v)[4]) {
          store_row_elems<float, 4>(row_s + d, v);
        });
      } else {
#pragma unroll
        for (int f = 0; f < kOFrags; ++f) {
          *reinterpret_cast<float2*>(o_s + (warp * 16 + r) * kStride + f * 8 + 2 * c) =
              make_float2(o[f][2 * i], o[f][2 * i + 1]);
        }
      }
      if (c == 0) {
        ml_s[(warp * 16 + r) * 2] = m[i];
        ml_s[(warp * 16 + r) * 2 + 1] = l[i];
      }
    }
    __syncthreads();
    // One thread per row: the warps' weights (normalisation folded in), the LSE, the target.
    float* wt_s = ml_s + Traits::kWarps * 16 * 2;                            // [row][kWarpsN]
    auto* dst_s = reinterpret_cast<long long*>(wt_s + Traits::kWarps * 16);  // [row]
    if (tid < WARPS_M * 16) {
      const int row = tid;
      const std::int64_t target = unit_rows.target(row);
      const int rw = row % 16;
      const int w0 = row / 16;  // warps w0, w0 + WARPS_M, ... hold this row
      float mx = -INFINITY;
#pragma unroll
      for (int k = 0; k < kWarpsN; ++k) mx = fmaxf(mx, ml_s[((w0 + k * WARPS_M) * 16 + rw) * 2]);
      float wk[kWarpsN];
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < kWarpsN; ++k) {
        const int w = w0 + k * WARPS_M;
        // 0 for a warp that saw no token (also when no warp did: mx = -inf).
        const float mw = ml_s[(w * 16 + rw) * 2];
        wk[k] = mw == -INFINITY ? 0.f : exp2f(mw - mx);
        sum += ml_s[(w * 16 + rw) * 2 + 1] * wk[k];
      }
      // A unit without tokens stores zeros and LSE -inf.
#pragma unroll
      for (int k = 0; k < kWarpsN; ++k) wt_s[row * kWarpsN + k] = sum > 0.f ? wk[k] / sum : 0.f;
      if (target >= 0) {
        unit_rows.store_lse(target, natural_lse(mx, sum));
      }
      dst_s[row] = target;
    }
    __syncthreads();
    constexpr int kVecPerRow = HEAD_DIM / 4;
    for (int e = tid; e < WARPS_M * 16 * kVecPerRow; e += Traits::kThreads) {
      const int row = e / kVecPerRow;
      const int d = (e % kVecPerRow) * 4;
      const long long dst = dst_s[row];
      if (dst < 0) continue;
      const int rw = row % 16;
      const int w0 = row / 16;
      float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int k = 0; k < kWarpsN; ++k) {
        const float wk = wt_s[row * kWarpsN + k];
        const float4 v =
            *reinterpret_cast<const float4*>(o_s + ((w0 + k * WARPS_M) * 16 + rw) * kStride + d);
        acc.x = fmaf(wk, v.x, acc.x);
        acc.y = fmaf(wk, v.y, acc.y);
        acc.z = fmaf(wk, v.z, acc.z);
        acc.w = fmaf(wk, v.w, acc.w);
      }
      const float four[4] = {acc.x, acc.y, acc.z, acc.w};
      unit_rows.template store<4>(dst, d, four);
    }
  }
}

/// Runs a unit of `unit_rows.rows` rows in the warp layout its size calls for (uniform over
/// the CTA): rows on warps when there are many, tokens on warps when there are few.
template <class T, int HEAD_DIM, class TKv, class Params, class Rows>
__device__ __forceinline__ void radix_mma_unit(const Params& p,
                                               const RadixMmaSmem<T, HEAD_DIM, TKv>& sm,
                                               const DecodeSpan& span, const Rows& unit_rows,
                                               int kv_head) {
  if (unit_rows.rows <= 16) {
    radix_mma_item<T, HEAD_DIM, 1, TKv>(p, sm, span, unit_rows, kv_head);
  } else if (unit_rows.rows <= 32) {
    radix_mma_item<T, HEAD_DIM, 2, TKv>(p, sm, span, unit_rows, kv_head);
  } else {
    radix_mma_item<T, HEAD_DIM, 4, TKv>(p, sm, span, unit_rows, kv_head);
  }
}

}  // namespace radix_attention::detail
