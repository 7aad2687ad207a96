#pragma once
/// @file
/// Paged decode on tensor cores, for __half / __nv_bfloat16 caches.
///
/// One CTA per (sequence, kv head, up to 16 query heads of its group, split). The group's query
/// heads are the 16 rows of an m16n8k16 MMA, so one pass over K/V serves every head of the
/// group; rows beyond the group are zero queries whose results are discarded. K/V tiles of
/// kTileTokens tokens stream through a kStages-deep cp.async pipeline into swizzled shared
/// memory; each of the 4 warps owns 16 tokens of a tile (one k-step of P*V) and keeps its own
/// online-softmax state, merged across warps in the epilogue. The physical slots of upcoming
/// tokens are looked up one tile ahead of their copies (block-table reads never stall a copy),
/// so block_size 1 streams as fast as block_size 16.
///
/// An fp8 e4m3 cache (TKv = __nv_fp8_e4m3) streams half the bytes per token into fp8 stages
/// (Fp8FragmentTile); each warp builds its K and V MMA operands in registers from the staged
/// bytes (kernels/detail/fp8_mma_fragments.cuh), so a stage is read from shared memory once.
/// Q is stored in the permuted head_dim order those K fragments use, and the output columns,
/// permuted by the V fragments, are put back in order when the warps publish them. The K scale
/// is folded into the softmax scale and the V scale into the output.

#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/cp_async.cuh"
#include "radix_attention/kernels/detail/fp8_dequant.cuh"
#include "radix_attention/kernels/detail/fp8_mma_fragments.cuh"
#include "radix_attention/kernels/detail/mma.cuh"
#include "radix_attention/kernels/detail/paged_decode_common.cuh"

// Tuning knob (pipeline depth at head_dim 128), overridable for experiments only.
#ifndef RADIX_ATTENTION_DECODE_TC_STAGES_128
#define RADIX_ATTENTION_DECODE_TC_STAGES_128 3
#endif

namespace radix_attention::detail {

/// Compile-time configuration of the tensor-core decode kernel for query / output type T,
/// head_dim D and cache element type TKv (T or __nv_fp8_e4m3).
template <class T, int D, class TKv = T>
struct PagedDecodeTcTraits {
  static_assert(D % 64 == 0, "head_dim must be a multiple of 64 (16-byte chunks, 8-way swizzle)");
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = 16;        // query heads per CTA: the MMA's M
  static constexpr int kWarpTokens = 16;  // tokens per warp per tile: the P*V MMA's K
  static constexpr int kTileTokens = kWarps * kWarpTokens;
  static constexpr int kChunks = D / 8;  // 16-byte chunks per 16-bit row (Q, 16-bit K/V)
  static constexpr bool kFp8 = std::is_same_v<TKv, __nv_fp8_e4m3>;
  static_assert(kFp8 || std::is_same_v<TKv, T>, "the cache holds T or fp8 e4m3");
  static constexpr int kKvChunks = D * static_cast<int>(sizeof(TKv)) / 16;  // per cache row
  static constexpr int kKvChunkElems = 16 / static_cast<int>(sizeof(TKv));
  // Enough bytes in flight per SM to cover DRAM latency with 2 CTAs/SM at D <= 128 (96 KB each)
  // and 1 CTA/SM at D = 256 (128 KB); more stages would only lower occupancy. An fp8 stage is
  // half as large, so one more stage keeps about as many bytes in flight (D = 128: 4 x 16 KB
  // stages, 69 KB in all: 3 CTAs/SM where registers allow; D = 256: 3 x 32 KB, 2 CTAs/SM).
  static constexpr int kStages =
      kFp8 ? (D >= 256 ? 3 : 4)
           : (D >= 256 ? 2 : (D >= 128 ? RADIX_ATTENTION_DECODE_TC_STAGES_128 : 4));
  static constexpr int kTileElems = kTileTokens * D;
  static constexpr int kStageBytes = 2 * kTileElems * static_cast<int>(sizeof(TKv));
  static constexpr int kSlotRing = kStages + 1;  // slots of tiles i .. i + kStages
  static constexpr int kPipeBytes = kStages * kStageBytes;
  static constexpr int kQBytes = kRows * D * static_cast<int>(sizeof(T));
  static constexpr int kSmemBytes = kPipeBytes + kQBytes + kSlotRing * kTileTokens * 4;
  // Queries stay in registers up to D = 128; at D = 256 they would push the 128 float output
  // accumulators into spills, so they are re-read from shared memory each tile instead.
  static constexpr bool kQInRegs = D <= 128;
  static_assert(sizeof(EpilogueSmem<kWarps, kRows, D>) <= kPipeBytes, "epilogue scratch");
};

/// Element offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows][D] tile: the chunk
/// index is XORed with row % 8 so that the 8 rows an ldmatrix phase reads hit distinct banks.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

template <class T, int D, class TKv = T>
__global__ void __launch_bounds__(PagedDecodeTcTraits<T, D, TKv>::kThreads)
    paged_decode_tc_kernel(const PagedDecodeParams<T, TKv> p) {
  using Tr = PagedDecodeTcTraits<T, D, TKv>;
  constexpr int S = Tr::kStages;
  constexpr int TK = Tr::kTileTokens;
  extern __shared__ __align__(128) unsigned char smem[];
  TKv* kv_smem = reinterpret_cast<TKv*>(smem);
  T* q_smem = reinterpret_cast<T*>(smem + Tr::kPipeBytes);
  int* slot_ring = reinterpret_cast<int*>(smem + Tr::kPipeBytes + Tr::kQBytes);

  const int tid = threadIdx.x;
  allow_dependent_launch();
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int split = blockIdx.x;
  const int kv_head = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int seq = blockIdx.z;
  const int head0 = kv_head * p.group_size + chunk * Tr::kRows;
  const int rows = min(Tr::kRows, p.group_size - chunk * Tr::kRows);

  const std::int32_t* table_row =
      p.block_tables + static_cast<long long>(seq) * p.block_table_stride;
  // Without split-KV a CTA starts at token 0, so the block ids of its first tiles can be read
  // before the context length arrives (bounded by the row's capacity, masked when published):
  // one dependent memory round trip less at every CTA's start.
  int first_blocks[S + 1];
  const bool speculate = p.num_splits == 1;
  if (speculate) {
    const int capacity = p.max_blocks_per_seq * p.block_size;
#pragma unroll
    for (int t = 0; t <= S; ++t) {
      const int token = t * TK + tid;
      first_blocks[t] =
          (tid < TK && token < capacity) ? __ldg(table_row + token / p.block_size) : -1;
    }
  }
  int begin, end;
  split_range(context_length(p, seq), split, p.num_splits, TK, begin, end);
  const int num_tiles = (end - begin + TK - 1) / TK;

  // Threads 0..TK-1 own token `tid` of every tile: its block id is loaded one tile before its
  // slot is published to the ring, and the ring entry one tile before the copies use it.
  auto load_block = [&](int tile) -> int {
    const int token = begin + tile * TK + tid;
    return (tid < TK && token < end) ? __ldg(table_row + token / p.block_size) : -1;
  };
  auto publish_slot = [&](int tile, int block) {
    if (tid < TK) {
      const int token = begin + tile * TK + tid;
      slot_ring[(tile % Tr::kSlotRing) * TK + tid] = token < end ? token_slot(p, block, token) : -1;
    }
  };
  // Shared element offset of 16-byte chunk c of staged row r: the swizzled tile for a 16-bit
  // cache, the fp8 fragment tile for fp8.
  auto stage_offset = [](int r, int c) {
    if constexpr (Tr::kFp8) {
      return Fp8FragmentTile<D>::offset(r, c);
    } else {
      return swz<D>(r, c);
    }
  };
  auto issue_tile = [&](int tile) {
    if (tile < num_tiles) {
      TKv* k_dst = kv_smem + (tile % S) * 2 * Tr::kTileElems;
      TKv* v_dst = k_dst + Tr::kTileElems;
      const int* slots = slot_ring + (tile % Tr::kSlotRing) * TK;
      const int c = tid % Tr::kKvChunks;
#pragma unroll
      for (int r = tid / Tr::kKvChunks; r < TK; r += Tr::kThreads / Tr::kKvChunks) {
        const int slot = slots[r];
        const long long offset =
            slot < 0 ? 0 : kv_slot_offset(p.kv, slot, kv_head) + c * Tr::kKvChunkElems;
        cp_async_16_zfill(k_dst + stage_offset(r, c), p.k_cache + offset, slot >= 0);
        cp_async_16_zfill(v_dst + stage_offset(r, c), p.v_cache + offset, slot >= 0);
      }
    }
    cp_async_commit();  // empty groups keep the wait_group arithmetic uniform
  };

  // Query rows of this CTA into shared memory (zero rows past the group).
  for (int i = tid; i < Tr::kRows * Tr::kChunks; i += Tr::kThreads) {
    const int r = i / Tr::kChunks;
    const int c = i % Tr::kChunks;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      const T* q_row = p.q + static_cast<long long>(seq) * p.q_row_stride + (head0 + r) * D;
      if constexpr (Tr::kFp8) {
        val = fp8_qk_q_chunk(q_row, c);  // the head_dim order of the fp8 K fragments
      } else {
        val = *reinterpret_cast<const uint4*>(q_row + c * 8);
      }
    }
    *reinterpret_cast<uint4*>(q_smem + swz<D>(r, c)) = val;
  }
  if (!speculate) {
#pragma unroll
    for (int t = 0; t <= S; ++t) first_blocks[t] = load_block(t);
  }
#pragma unroll
  for (int t = 0; t < S; ++t) publish_slot(t, first_blocks[t]);
  int next_block = first_blocks[S];
  __syncthreads();
  for (int t = 0; t < S - 1; ++t) issue_tile(t);

  // A fragments of Q: row = lane % 16, chunk = 2 * kk + lane / 16 (see mma.cuh).
  auto load_q = [&](unsigned(&a)[4], int kk) {
    ldmatrix_x4(a, q_smem + swz<D>(lane & 15, 2 * kk + (lane >> 4)));
  };
  unsigned q_frag[Tr::kQInRegs ? D / 16 : 1][4];
  if constexpr (Tr::kQInRegs) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) load_q(q_frag[kk], kk);
  }

  // fp8: q . (k_scale K) = k_scale (q . K), so the K scale joins the softmax scale.
  float scale_log2 = p.scale_log2;
  if constexpr (Tr::kFp8) {
    scale_log2 *= load_kv_scale(p.k_scale, p.scale_head_step, kv_head);
  }

  float o_acc[D / 8][4];
#pragma unroll
  for (int j = 0; j < D / 8; ++j) o_acc[j][0] = o_acc[j][1] = o_acc[j][2] = o_acc[j][3] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // rows g and g + 8, g = lane / 4
  float row_sum[2] = {0.f, 0.f};              // this thread's columns only; quad-summed at the end

  const int wrow = warp * Tr::kWarpTokens;
  for (int tile = 0; tile < num_tiles; ++tile) {
    cp_async_wait<S - 2>();
    __syncthreads();  // tile `tile` landed for all threads; stage of tile - 1 is free again
    publish_slot(tile + S, next_block);
    next_block = load_block(tile + S + 1);
    issue_tile(tile + S - 1);

    // S = Q K^T for this warp's 16 tokens: two n-tiles of 8 tokens.
    float score[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
    const TKv* k_stage = kv_smem + (tile % S) * 2 * Tr::kTileElems;
    if constexpr (Tr::kFp8) {
      // The stage landed for every thread at the barrier above.
      const auto* k_rows = reinterpret_cast<const unsigned char*>(k_stage + wrow * D);
      static_assert(Tr::kWarpTokens % 8 == 0, "a warp's rows start on a swizzle period");
      fp8_qk<T, D, Tr::kWarpTokens>(score, k_rows, lane, [&](int kk, unsigned(&a)[4]) {
        if constexpr (Tr::kQInRegs) {
          a[0] = q_frag[kk][0], a[1] = q_frag[kk][1], a[2] = q_frag[kk][2], a[3] = q_frag[kk][3];
        } else {
          load_q(a, kk);
        }
      });
    } else {
      const T* k_tile = k_stage;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        unsigned a[4];
        if constexpr (Tr::kQInRegs) {
          a[0] = q_frag[kk][0], a[1] = q_frag[kk][1], a[2] = q_frag[kk][2], a[3] = q_frag[kk][3];
        } else {
          load_q(a, kk);
        }
        unsigned b[4];
        ldmatrix_x4(
            b, k_tile + swz<D>(wrow + (lane & 7) + ((lane >> 4) << 3), 2 * kk + ((lane >> 3) & 1)));
        mma_m16n8k16<T>(score[0], a, b[0], b[1]);
        mma_m16n8k16<T>(score[1], a, b[2], b[3]);
      }
    }

    // Online softmax in the base-2 domain; tokens past the range score -inf.
    const int token0 = begin + tile * TK + wrow + 2 * (lane & 3);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool valid = token0 + nt * 8 + (e & 1) < end;
        score[nt][e] = valid ? score[nt][e] * scale_log2 : -INFINITY;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], score[nt][e]);
      }
    }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      // A row that has seen only masked tokens keeps max -inf; use 0 as its base (no NaN).
      const float base = new_max == -INFINITY ? 0.f : new_max;
      correction[r] = exp2f(row_max[r] - base);
      row_max[r] = new_max;
      tile_max[r] = base;
    }
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) score[nt][e] = exp2f(score[nt][e] - tile_max[e >> 1]);
    }
    row_sum[0] = row_sum[0] * correction[0] + score[0][0] + score[0][1] + score[1][0] + score[1][1];
    row_sum[1] = row_sum[1] * correction[1] + score[0][2] + score[0][3] + score[1][2] + score[1][3];
    // fp8: the operand conversions take issue slots the 16-bit path spends on nothing, so
    // the rescale is skipped once the maxima settle (correction 1 everywhere, warp-uniform).
    if (!Tr::kFp8 || __any_sync(0xffffffffu, correction[0] != 1.f || correction[1] != 1.f)) {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        o_acc[j][0] *= correction[0];
        o_acc[j][1] *= correction[0];
        o_acc[j][2] *= correction[1];
        o_acc[j][3] *= correction[1];
      }
    }

    // O += P V: the score accumulators are, re-packed, the A fragment of P (16 x 16 tokens).
    unsigned pa[4];
    pa[0] = DTypeTraits<T>::pack2(score[0][0], score[0][1]);
    pa[1] = DTypeTraits<T>::pack2(score[0][2], score[0][3]);
    pa[2] = DTypeTraits<T>::pack2(score[1][0], score[1][1]);
    pa[3] = DTypeTraits<T>::pack2(score[1][2], score[1][3]);
    if constexpr (Tr::kFp8) {
      // Columns of o_acc come out in fp8_pv_dim order; the epilogue restores head_dim order.
      fp8_pv_16<T, D>(o_acc, pa,
                      reinterpret_cast<const unsigned char*>(k_stage + Tr::kTileElems + wrow * D),
                      lane);
    } else {
      const T* v_tile = k_stage + Tr::kTileElems;
#pragma unroll
      for (int jj = 0; jj < D / 16; ++jj) {
        unsigned b[4];
        ldmatrix_x4_trans(
            b, v_tile + swz<D>(wrow + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * jj + (lane >> 4)));
        mma_m16n8k16<T>(o_acc[2 * jj], pa, b[0], b[1]);
        mma_m16n8k16<T>(o_acc[2 * jj + 1], pa, b[2], b[3]);
      }
    }
  }

  // fp8: P (v_scale V) = v_scale (P V).
  if constexpr (Tr::kFp8) {
    const float v_scale = load_kv_scale(p.v_scale, p.scale_head_step, kv_head);
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[j][e] *= v_scale;
    }
  }

  // Epilogue: publish each warp's state, merge in shared memory (pipeline buffers are idle).
  cp_async_wait<0>();
  __syncthreads();
  auto& epi = *reinterpret_cast<EpilogueSmem<Tr::kWarps, Tr::kRows, D>*>(smem);
  const int g = lane >> 2;
  const int c = lane & 3;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
  }
  if (c == 0) {
    epi.stats.max[warp][g] = row_max[0];
    epi.stats.max[warp][g + 8] = row_max[1];
    epi.stats.sum[warp][g] = row_sum[0];
    epi.stats.sum[warp][g + 8] = row_sum[1];
  }
  if constexpr (Tr::kFp8) {
    store_fp8_pv_row<D>(epi.out[warp][g], o_acc, 0, lane, 1.f);
    store_fp8_pv_row<D>(epi.out[warp][g + 8], o_acc, 1, lane, 1.f);
  } else {
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      *reinterpret_cast<float2*>(&epi.out[warp][g][8 * j + 2 * c]) =
          make_float2(o_acc[j][0], o_acc[j][1]);
      *reinterpret_cast<float2*>(&epi.out[warp][g + 8][8 * j + 2 * c]) =
          make_float2(o_acc[j][2], o_acc[j][3]);
    }
  }
  __syncthreads();
  combine_warps_and_store<T, Tr::kWarps, Tr::kRows, D, Tr::kThreads>(epi.out, epi.stats, p, seq,
                                                                     split, head0, rows);
}

}  // namespace radix_attention::detail
