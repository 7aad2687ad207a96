#pragma once
/// @file
/// Work schedule of the persistent prefill kernels: the (request, kv head, row tile) tiles of a
/// launch, numbered request-major, kv head next, and within one (request, kv head) from the last
/// row tile down. Under the causal mask a request's later row tiles see more keys, so each
/// group starts with its longest tile; the tiles running at one time (consecutive numbers, as
/// a persistent CTA takes items blockIdx.x, + gridDim.x, ...) share a few kv heads, whose K/V
/// then stay in L2 for all of them (numbering all requests' longest tiles first instead spreads
/// the concurrent tiles over every kv head of the batch, and their K/V no longer fit in L2).
/// Tiles past a request's rows are empty items and cost a CTA only the loads that find them
/// empty.

#include "radix_attention/kernels/detail/prefill_params.cuh"

namespace radix_attention::detail {

struct PrefillSchedule {
  int tiles_per_seq;  ///< row tiles of the longest request: ceil(max_q_len * group / rows)
  int num_seqs;
  int num_kv_heads;
  int num_items;  ///< tiles_per_seq * num_seqs * num_kv_heads
};

/// The tile of work item `w` (rows per tile `tile_rows`).
template <class T, class TKv>
__device__ __forceinline__ PrefillTile scheduled_prefill_tile(const PagedPrefillParams<T, TKv>& p,
                                                              const PrefillSchedule& schedule,
                                                              int w, int tile_rows) {
  const int group = w / schedule.tiles_per_seq;
  const int seq = group / schedule.num_kv_heads;
  return prefill_tile(p, seq, group - seq * schedule.num_kv_heads,
                      schedule.tiles_per_seq - 1 - (w - group * schedule.tiles_per_seq), tile_rows);
}

}  // namespace radix_attention::detail
