#pragma once
/// @file
/// Compile-time configuration of the radix-decode kernels and the parameters they receive.

#include <cuda_fp8.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/kv_slot_code.cuh"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention::detail {

/// Tensor-core (16-bit) radix kernel: one CTA = 4 warps computes up to 64 rows (queries x
/// query heads of one KV head) over one chunk; each KV tile is loaded once per CTA.
///
/// The kernel is latency-bound on shared chunks and on short private segments (about 2 active
/// warps per scheduler). 32-token tiles at 3 CTAs per SM, two instances launched back to back
/// and one kernel holding both shapes were each faster on some shared-prefix batches and slower
/// on long private segments; this shape keeps paged decode's speed on those (bench/RESULTS.md,
/// radix_decode, "Re-run with the current code and the layouts tried since").
///
/// An fp8 e4m3 cache (TKv) stages its tiles as fp8 (half the bytes) and the warps build their
/// K and V MMA operands in registers from the staged bytes
/// (kernels/detail/fp8_mma_fragments.cuh): a stage is read from shared memory once.
///
/// STAGES and Q_ROWS default to the radix kernel's shape; paged decode
/// (kernels/paged_decode.cuh) runs the same mainloop with a 16-row Q tile.
template <class T, int HEAD_DIM, class TKv = T,
          int STAGES = (HEAD_DIM <= 128 || std::is_same_v<TKv, __nv_fp8_e4m3>) ? 3 : 2,
          int Q_ROWS = kRadixRowsPerTile>
struct RadixMmaTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRows = Q_ROWS;  // default: 4 warps x 16 fragment rows
  static_assert(Q_ROWS % 16 == 0 && Q_ROWS <= kWarps * 16, "Q rows: whole fragments of the warps");
  /// Tokens per KV tile (plan/radix_plan_layout.hpp, shared with the planner's chunk
  /// alignment): 64 keeps K+V of one stage at 32 KB for head_dim 128, big enough for long
  /// 16-byte streams per token row, small enough for 2 CTAs (3 stages each) per SM.
  static constexpr int kTile = kRadixKvTileTokens;
  static constexpr bool kFp8 = std::is_same_v<TKv, __nv_fp8_e4m3>;
  static_assert(kFp8 || std::is_same_v<TKv, T>, "the cache holds T or fp8 e4m3");
  /// Stages in flight (default): 3 where shared memory allows 2 CTAs per SM, else 2 (16-bit
  /// head_dim 256). fp8 stages are half as large: 3 at head_dim 256 still fit one CTA per SM as
  /// the 16-bit 2 do, and hold the cross-warp merge scratch (68 KB) that 2 would not.
  static constexpr int kStages = STAGES;
  /// Q fragments stay in registers up to head_dim 128 (32 registers); beyond that the
  /// accumulators need the room and Q is re-read from shared memory with ldmatrix.
  static constexpr bool kQInRegisters = HEAD_DIM <= 128;
  static constexpr int kTileElems = kTile * HEAD_DIM;
  static constexpr std::size_t kSmemQ = std::size_t{kRows} * HEAD_DIM * sizeof(T);
  static constexpr std::size_t kSmemKV = std::size_t{kStages} * 2 * kTileElems * sizeof(TKv);
  static constexpr std::size_t kSmemSlots = std::size_t{kStages} * kTile * sizeof(int);
  static constexpr std::size_t kSmemBytes = kSmemQ + kSmemKV + kSmemSlots;
  /// Row stride (floats) of the cross-warp merge scratch: +8 floats staggers the rows' banks.
  static constexpr int kScratchStride = HEAD_DIM + 8;
  // Scratch: O [warps][16][stride] + (m, l) + weights [warps x 16] floats + 64 row targets.
  static_assert(std::size_t{kWarps} * 16 * (kScratchStride + 3) * sizeof(float) + 64 * 8 <= kSmemKV,
                "cross-warp merge scratch must fit in the KV stages it reuses");
};

/// CUDA-core decode mainloop (float inputs, kernels/detail/radix_simt_item.cuh): 4 warps
/// splitting the tokens, each holding up to 4 rows (query heads) at a time.
struct RadixSimtTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kRowsPerPass = 4;
};

/// Everything a radix-decode kernel reads, as plain pointers and sizes (checked on the host).
/// T: query / output type; TKv: cache element type (T, or __nv_fp8_e4m3 with scales).
template <class T, class TKv = T>
struct RadixKernelParams {
  const T* q;          ///< [num_queries rows (q_row_stride apart), num_q_heads, head_dim]
  const TKv* k_cache;  ///< [num_blocks, block_size, num_kv_heads, head_dim] through `kv`
  const TKv* v_cache;
  const std::int32_t* block_tables;  ///< [num_queries, block_table_stride]
  std::int64_t block_table_stride;
  std::int64_t q_row_stride;  ///< elements between rows of q
  KvSlotCode kv;              ///< K/V row addressing (kernels/detail/kv_slot_code.cuh)
  float* partial_out;         ///< [num_partials, num_q_heads, head_dim]
  float* partial_lse;         ///< [num_partials, num_q_heads], natural log
  RadixPlanView plan;
  int num_q_heads;
  int num_kv_heads;
  int group_size;
  int block_size;
  float scale_log2;  ///< softmax scale x log2(e): exponentials are taken base 2
  /// Work items x KV heads when known on the host; -1: read from the plan's header (fixed grid).
  int total_work;
  const float* k_scale = nullptr;  ///< fp8 cache: dequantisation scales (core/kv_scales.hpp)
  const float* v_scale = nullptr;
  int scale_head_step = 0;  ///< 0: one scale per tensor, 1: one per kv head
};

/// Reads one work item with two 16-byte loads.
__device__ __forceinline__ RadixItem load_radix_item(const RadixItem* item) {
  const int4 a = __ldg(reinterpret_cast<const int4*>(item));
  const int4 b = __ldg(reinterpret_cast<const int4*>(item) + 1);
  return RadixItem{a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
}

}  // namespace radix_attention::detail
