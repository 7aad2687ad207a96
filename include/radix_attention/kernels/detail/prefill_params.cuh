#pragma once
/// @file
/// What a paged-prefill kernel reads (plain pointers and sizes, checked on the host) and the
/// geometry of one CTA's tile: a run of "rows" = (query row, group head) pairs of one request
/// and one KV head, so that GQA heads sharing a KV head share every K/V tile the CTA loads.

#include <cstdint>

#include "radix_attention/kernels/detail/bounds_check.cuh"
#include "radix_attention/kernels/detail/paged_tile_loader.cuh"

namespace radix_attention::detail {

/// T: query / output type; TKv: cache element type (T, or __nv_fp8_e4m3 with scales).
template <class T, class TKv = T>
struct PagedPrefillParams {
  const T* q;                        ///< [total_q rows (q_row_stride), num_q_heads, head_dim]
  T* out;                            ///< [total_q rows (out_row_stride), num_q_heads, head_dim]
  float* lse;                        ///< [total_q, num_q_heads] natural log, or nullptr
  const TKv* k_cache;                ///< paged K, addressed through `layout`
  const TKv* v_cache;                ///< paged V, same layout
  const std::int32_t* qo_indptr;     ///< [num_seqs + 1] CSR over the packed query rows
  const std::int32_t* block_tables;  ///< [num_seqs, table_stride]
  const std::int32_t* context_lens;  ///< [num_seqs]: cached prefix + new tokens
  std::int64_t table_stride;
  std::int64_t q_row_stride;    ///< elements between query rows
  std::int64_t out_row_stride;  ///< elements between output rows
  KvLayout layout;
  int block_size;
  int num_q_heads;
  int group_size;  ///< num_q_heads / num_kv_heads
  int max_blocks_per_seq;
  int num_blocks;
  float scale_log2;                ///< softmax scale x log2(e): exponentials are taken base 2
  bool causal;                     ///< query i of q_len sees keys < kv_len - q_len + i + 1
  const float* k_scale = nullptr;  ///< fp8 cache: dequantisation scales (core/kv_scales.hpp)
  const float* v_scale = nullptr;
  int scale_head_step = 0;  ///< 0: one scale per tensor, 1: one per kv head
};

/// One CTA's work: rows [row0, row0 + rows) of request `seq` for KV head `kv_head`, where row
/// r stands for query `r / group_size` (of the request) and query head
/// `kv_head * group_size + r % group_size`; keys [0, kv_end) are read, keys >= diag need the
/// per-row causal mask.
struct PrefillTile {
  int seq;
  int kv_head;
  int q_begin;
  int q_len;
  int kv_len;
  int row0;
  int rows;  ///< <= 0: the CTA has nothing to do
  int kv_end;
  int diag;
};

__device__ __forceinline__ int clamp_int(int x, int lo, int hi) { return min(max(x, lo), hi); }

/// Keys visible to query `qi` of the tile's request: the causal limit aligned to the end.
template <class T, class TKv>
__device__ __forceinline__ int prefill_key_limit(const PagedPrefillParams<T, TKv>& p,
                                                 const PrefillTile& t, int qi) {
  return p.causal ? clamp_int(t.kv_len - t.q_len + qi + 1, 0, t.kv_len) : t.kv_len;
}

/// The key limits of the two rows a lane holds in mma / wgmma fragments (rows 16 warp + lane / 4
/// and 8 further, `warp` counted over the whole tile); rows past the tile's end take kv_end.
template <class T, class TKv>
__device__ __forceinline__ void prefill_lane_key_limits(const PagedPrefillParams<T, TKv>& p,
                                                        const PrefillTile& t, int warp, int lane,
                                                        int (&limit)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = warp * 16 + lane / 4 + 8 * i;
    limit[i] = r < t.rows ? prefill_key_limit(p, t, (t.row0 + r) / p.group_size) : t.kv_end;
  }
}

template <class T, class TKv>
__device__ __forceinline__ PrefillTile prefill_tile(const PagedPrefillParams<T, TKv>& p, int seq,
                                                    int kv_head, int tile_index, int tile_rows) {
  PrefillTile t;
  t.seq = seq;
  t.kv_head = kv_head;
  t.q_begin = __ldg(p.qo_indptr + seq);
  t.q_len = __ldg(p.qo_indptr + seq + 1) - t.q_begin;
  t.kv_len = __ldg(p.context_lens + seq);
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(t.q_len >= 0 && t.kv_len >= 0 &&
                                      t.kv_len <= p.max_blocks_per_seq * p.block_size);
  t.row0 = tile_index * tile_rows;
  t.rows = min(tile_rows, t.q_len * p.group_size - t.row0);
  t.kv_end = t.diag = 0;
  if (t.rows > 0) {
    t.kv_end = prefill_key_limit(p, t, (t.row0 + t.rows - 1) / p.group_size);
    t.diag = prefill_key_limit(p, t, t.row0 / p.group_size);
  }
  return t;
}

/// Element offset of tile row r's query head in q (or out, with that row stride); -1 past the
/// tile's rows.
__device__ __forceinline__ long long prefill_row_offset(const PrefillTile& t, int r, int group_size,
                                                        std::int64_t row_stride, int head_dim) {
  if (r >= t.rows) return -1;
  const int fr = t.row0 + r;
  const int qi = fr / group_size;
  const int head = t.kv_head * group_size + (fr - qi * group_size);
  return static_cast<long long>(t.q_begin + qi) * row_stride +
         static_cast<long long>(head) * head_dim;
}

/// Index of tile row r's LSE in [total_q, num_q_heads].
template <class T, class TKv>
__device__ __forceinline__ long long prefill_lse_index(const PagedPrefillParams<T, TKv>& p,
                                                       const PrefillTile& t, int r) {
  const int fr = t.row0 + r;
  const int qi = fr / p.group_size;
  return static_cast<long long>(t.q_begin + qi) * p.num_q_heads + t.kv_head * p.group_size +
         (fr - qi * p.group_size);
}

}  // namespace radix_attention::detail
