#pragma once
/// @file
/// The batch planner's parameters (PlannerOptions: model shape, device, cost model, chunking),
/// the model and device shapes BatchPlanner is constructed with, and PlanStats. Plain C++17.

#include <cstdint>

#include "radix_attention/core/error.hpp"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention {

/// @brief The attention shape a planner plans for: it prices a token's K/V bytes and a
/// partial state's bytes (see PlannerOptions).
struct ModelShape {
  std::int32_t num_q_heads = 0;       ///< a positive multiple of num_kv_heads
  std::int32_t num_kv_heads = 0;      ///< >= 1
  std::int32_t head_dim = 0;          ///< >= 1
  std::int32_t kv_element_bytes = 0;  ///< bytes of one K/V element: 2 for bf16/half, 4 for float
};

/// @brief The GPU a planner sizes its split-KV chunks for (one wave = num_sms x ctas_per_sm
/// CTAs of the radix kernel). No default SM count: pass the device's
/// (cudaDevAttrMultiProcessorCount).
struct DeviceShape {
  std::int32_t num_sms = 0;      ///< SMs of the GPU, >= 1 (required)
  std::int32_t ctas_per_sm = 0;  ///< radix-kernel CTAs per SM; 0 = radix_ctas_per_sm(head_dim)
};

/**
 * @brief Parameters of the planner's cost model and split-KV chunking.
 *
 * Cost model. Costs are bytes of memory traffic (decode attention is bandwidth-bound), with
 * B = 2 (K and V) x num_kv_heads x head_dim x kv_element_bytes bytes per token and
 * P = 2 (write, then read by the merge) x num_q_heads x (head_dim + 1) x 4 bytes per partial
 * state (float32 output row + LSE). A segment of L tokens read for k queries costs L x B once
 * if shared, k x L x B if each query reads its own copy. Treating a trie node as shared saves
 * (k - 1) x L x B but gives each of its k queries one more partial (k x P) and adds a segment
 * (segment_overhead_bytes); a private node is appended to the query's private run when that run
 * is open, costing no partial. The planner minimises the total exactly (dynamic programming
 * over the trie), then keeps the all-private plan unless sharing also pays for the merge step
 * (merge_launch_bytes) that it introduces. With the defaults, two queries sharing one 16-token
 * block are not shared (64 KiB saved < 2 partials + merge), while 64 queries sharing 4096
 * tokens are (about 1 GiB saved).
 *
 * Chunking. The work W = sum over segments of tokens x num_kv_heads x ceil(queries x
 * num_q_heads / num_kv_heads / rows_per_tile) (one CTA streams one chunk of one KV head for one
 * tile of query rows) is spread over one wave of the radix kernel, num_sms x ctas_per_sm CTAs:
 * the target chunk length is W / (num_sms x ctas_per_sm), clamped to
 * [min_chunk_tokens, max_chunk_tokens]. A segment is split into equal chunks whose lengths are
 * multiples of chunk_alignment_tokens (rounded up to a multiple of the block size); no chunk is
 * longer than max_chunk_tokens, and none is shorter than min_chunk_tokens unless its segment is
 * or max_chunk_tokens leaves no other choice (a segment shorter than 2 x min_chunk_tokens stays
 * whole). The cost model above compares unchunked plans: chunking adds the same kind of
 * partials to any of them.
 *
 * Defaults describe a reference setup: H100 SXM (num_sms = 132), bf16, 32 q / 8 kv heads,
 * head_dim 128. The free function plan() uses them as given; BatchPlanner takes the model shape
 * and the device (ModelShape, DeviceShape) as required constructor arguments instead.
 */
struct PlannerOptions {
  std::int32_t num_q_heads = 32;  ///< a multiple of num_kv_heads
  std::int32_t num_kv_heads = 8;
  std::int32_t head_dim = 128;
  std::int32_t kv_element_bytes = 2;  ///< bf16/half; 4 for float
  /// SMs of the GPU (132: H100 SXM). The chunk target spreads the work over num_sms x
  /// ctas_per_sm CTAs: one full wave of the radix kernel.
  std::int32_t num_sms = 132;
  /// Radix-kernel CTAs resident per SM; 0 = the kernel's occupancy, radix_ctas_per_sm(head_dim)
  /// (plan/radix_plan_layout.hpp): 2 for head_dim <= 128, 1 for 256. Measured on H100 with the
  /// planner's own plans (bf16, head_dim 128, 32 q / 8 kv heads), one wave of 264 CTAs against 132:
  /// 64 x (4096 + 128) 47.7 vs 66.0 us, 32 x (16384 + 512) 79.5 vs 118.9 us, two-level 8 x 32 x
  /// (1024 + 2048 + 128) 126.1 vs 125.9 us, and 256 x (2048 + 64) 98.1 vs 87.0 us (its 2048-token
  /// prefix is then cut in two).
  std::int32_t ctas_per_sm = 0;
  /// Shortest chunk (256): a chunk costs one more partial per query; at 256 tokens a chunk of one
  /// KV head reads 128 KiB (bf16, head_dim 128) against 4 KiB of partial state for a GQA group
  /// of 4 (~3%), and spans 4 tiles of 64 tokens, enough for a 3-4 stage copy pipeline to reach
  /// its steady state.
  std::int32_t min_chunk_tokens = 256;
  /// Longest chunk; 0 = no limit (the chunk count is already sized to the GPU through num_sms;
  /// set a limit for kernels that need bounded work per CTA). Else a multiple of
  /// chunk_alignment_tokens and >= min_chunk_tokens.
  std::int32_t max_chunk_tokens = 0;
  /// Chunk lengths are multiples of this (the radix kernel's KV tile, kRadixKvTileTokens = 64,
  /// so only a segment's last tile is partial), rounded up to a multiple of the block size
  /// unless that would exceed max_chunk_tokens.
  std::int32_t chunk_alignment_tokens = kRadixKvTileTokens;
  /// Query rows (query x q head of one KV head's group) one CTA handles (the radix kernel's
  /// kRadixRowsPerTile = 64); only used to size the work for chunking.
  std::int32_t rows_per_tile = kRadixRowsPerTile;
  /// Fixed cost of one more segment, in bytes (32 KiB: about 1.3 us of one SM's share of HBM
  /// bandwidth, 3.35 TB/s / 132 SMs ~ 25 GB/s: a chunk's prologue and epilogue, which do not
  /// overlap with streaming).
  double segment_overhead_bytes = 32.0 * 1024;
  /// Fixed cost of the merge step, in bytes (4 MiB: about 1.3 us at 3.35 TB/s, the gap a
  /// dependent second kernel adds on H100 even inside a CUDA graph).
  double merge_launch_bytes = 4.0 * 1024 * 1024;
  /// false: never share (every query one private segment, still chunked): plain paged decode.
  bool enable_sharing = true;
  /// Batch-invariant plans: a query's output bits depend only on its own tokens, not on the
  /// other queries of the batch nor on whether its prefix is shared. Chunks are cut at absolute
  /// multiples of deterministic_chunk_tokens (not sized to the batch); a shared segment only
  /// covers whole such chunks (its boundaries are rounded down to them, the tokens in between
  /// are read by the queries' own segments); every query's partials are merged in token order;
  /// work items hold at most kRadixBatchInvariantRows rows, so every row takes the same warp
  /// layout in the kernel. The chunk set of a query is then the same in any batch, and each
  /// chunk's arithmetic per row is the same. Off by default: the default plans are faster.
  bool deterministic = false;
  /// Chunk length of batch-invariant plans, a multiple of kRadixKvTileTokens (64). 512: the
  /// S1-S6 decode shapes get a few chunks per sequence and full waves; a shared prefix loses
  /// at most 511 tokens of sharing to the rounding.
  std::int32_t deterministic_chunk_tokens = 512;
};

/// @brief What the planner decided, for logging, tuning and tests.
struct PlanStats {
  std::int32_t num_shared_segments = 0;
  std::int32_t num_private_segments = 0;
  std::int32_t num_trie_nodes = 0;       ///< candidate nodes found (shared or not)
  std::int32_t chunk_target_tokens = 0;  ///< target chunk length used for splitting
  double modelled_bytes = 0;             ///< cost model total of the chosen plan (before chunking)
  double modelled_bytes_unshared = 0;    ///< the same for the all-private plan
};

namespace detail {

inline void check_planner_options(const PlannerOptions& o) {
  expects(o.num_kv_heads >= 1, "options.num_kv_heads", o.num_kv_heads, "must be >= 1");
  expects(o.num_q_heads >= 1 && o.num_q_heads % o.num_kv_heads == 0, "options.num_q_heads",
          o.num_q_heads, "must be a positive multiple of num_kv_heads");
  expects(o.head_dim >= 1, "options.head_dim", o.head_dim, "must be >= 1");
  expects(o.kv_element_bytes >= 1, "options.kv_element_bytes", o.kv_element_bytes, "must be >= 1");
  expects(o.num_sms >= 1, "options.num_sms", o.num_sms, "must be >= 1");
  expects(o.ctas_per_sm >= 0, "options.ctas_per_sm", o.ctas_per_sm,
          "must be >= 0 (0 = the radix kernel's occupancy)");
  expects(o.min_chunk_tokens >= 1, "options.min_chunk_tokens", o.min_chunk_tokens, "must be >= 1");
  expects(o.chunk_alignment_tokens >= 1, "options.chunk_alignment_tokens", o.chunk_alignment_tokens,
          "must be >= 1");
  expects(o.max_chunk_tokens == 0 || (o.max_chunk_tokens >= o.min_chunk_tokens &&
                                      o.max_chunk_tokens % o.chunk_alignment_tokens == 0),
          "options.max_chunk_tokens", o.max_chunk_tokens,
          "must be 0 or a multiple of chunk_alignment_tokens that is >= min_chunk_tokens");
  expects(o.rows_per_tile >= 1, "options.rows_per_tile", o.rows_per_tile, "must be >= 1");
  expects(o.segment_overhead_bytes >= 0, "options.segment_overhead_bytes", o.segment_overhead_bytes,
          "must be >= 0");
  expects(o.merge_launch_bytes >= 0, "options.merge_launch_bytes", o.merge_launch_bytes,
          "must be >= 0");
  expects(!o.deterministic || (o.deterministic_chunk_tokens >= kRadixKvTileTokens &&
                               o.deterministic_chunk_tokens % kRadixKvTileTokens == 0),
          "options.deterministic_chunk_tokens", o.deterministic_chunk_tokens,
          "must be a positive multiple of 64 (the radix kernel's KV tile)");
}

}  // namespace detail

/// @brief `tuning` with the model and device fields replaced by `model` and `device`: the
/// options a BatchPlanner plans with.
inline PlannerOptions planner_options(const ModelShape& model, const DeviceShape& device,
                                      PlannerOptions tuning = {}) {
  tuning.num_q_heads = model.num_q_heads;
  tuning.num_kv_heads = model.num_kv_heads;
  tuning.head_dim = model.head_dim;
  tuning.kv_element_bytes = model.kv_element_bytes;
  tuning.num_sms = device.num_sms;
  tuning.ctas_per_sm = device.ctas_per_sm;
  return tuning;
}

}  // namespace radix_attention
