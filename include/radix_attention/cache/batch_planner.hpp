#pragma once
/// @file
/// Batch planner: turns a batch's block tables into the RadixPlan that the radix-decode kernel
/// executes (DESIGN.md, "Radix plan" and "BatchPlanner"). Plain C++17.
///
/// Sharing is found at block granularity. Sequences that share a cached prefix (through the
/// radix tree or a fork) hold the same block ids at the same positions, so a trie over the rows'
/// full-block id sequences reproduces the radix-tree paths the batch uses, at any depth: a prompt
/// shared by all, a few-shot block shared by a group, each request's private suffix. Only full
/// blocks identical in every sharer count; a query's last, partially filled block is private.
/// A cost model (PlannerOptions) decides which shared trie nodes are worth a shared segment;
/// long segments are split into chunks (split-KV) so the grid fills the GPU.
///
/// Cost: linear in the block-table entries the contexts use, plus k log k per branching trie
/// node. Planning 256 sequences x (2048 shared + 64 private) tokens at block size 16 (33.8k
/// entries) takes about 50 us on one CPU core, 256 x 2048 private about 35 us, and the same
/// batch at block size 1 (541k entries) about 0.45 ms (bench/batch_planner_bench.cpp,
/// RelWithDebInfo). About a third of it is the batch fingerprint.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "radix_attention/cache/detail/planner_cost.hpp"
#include "radix_attention/cache/detail/planner_emit.hpp"
#include "radix_attention/cache/detail/planner_input.hpp"
#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/cache/radix_plan.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention {

/**
 * @brief A batch's block tables as raw arrays in HOST memory (e.g. over BlockTables, or an
 * engine's own arrays; core/views.hpp's BlockTableView is the device-side counterpart the
 * launchers take): token `t` of row `s` lives in block `block_tables[s * max_blocks_per_seq +
 * t / block_size]`. Only the first ceil(context_lens[s] / block_size) entries of a row are read.
 */
struct HostBlockTableView {
  std::int32_t block_size = 0;
  std::int32_t num_seqs = 0;
  std::int32_t max_blocks_per_seq = 0;         ///< row stride of block_tables
  const std::int32_t* block_tables = nullptr;  ///< [num_seqs * max_blocks_per_seq]
  const std::int32_t* context_lens = nullptr;  ///< [num_seqs]
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
 * Defaults describe the reference setup: H100 SXM, bf16, 32 q / 8 kv heads, head_dim 128.
 */
struct PlannerOptions {
  std::int32_t num_q_heads = 32;  ///< a multiple of num_kv_heads
  std::int32_t num_kv_heads = 8;
  std::int32_t head_dim = 128;
  std::int32_t kv_element_bytes = 2;  ///< bf16/half; 4 for float
  /// SMs of the GPU (132: H100 SXM). The chunk target spreads the work over num_sms x
  /// ctas_per_sm CTAs: one full wave of the radix kernel.
  std::int32_t num_sms = 132;
  /// Radix-kernel CTAs resident per SM; 0 = the kernel's occupancy: 2 for head_dim <= 128, 1
  /// for 256. Measured on H100 with the planner's own plans (bf16, head_dim 128, 32 q / 8 kv
  /// heads), one wave of 264 CTAs against 132: 64 x (4096 + 128) 47.7 vs 66.0 us, 32 x (16384 +
  /// 512) 79.5 vs 118.9 us, two-level 8 x 32 x (1024 + 2048 + 128) 126.1 vs 125.9 us, and
  /// 256 x (2048 + 64) 98.1 vs 87.0 us (its 2048-token prefix is then cut in two).
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
  /// Chunk lengths are multiples of this (64: the decode kernels' KV tile, so only a segment's
  /// last tile is partial), rounded up to a multiple of the block size unless that would exceed
  /// max_chunk_tokens.
  std::int32_t chunk_alignment_tokens = 64;
  /// Query rows (query x q head of one KV head's group) one CTA handles (64: one wgmma M tile,
  /// four mma.sync m16 tiles); only used to size the work for chunking.
  std::int32_t rows_per_tile = 64;
  /// Fixed cost of one more segment, in bytes (32 KiB: about 1.3 us of one SM's share of HBM
  /// bandwidth, 3.35 TB/s / 132 SMs ~ 25 GB/s: a chunk's prologue and epilogue, which do not
  /// overlap with streaming).
  double segment_overhead_bytes = 32.0 * 1024;
  /// Fixed cost of the merge step, in bytes (4 MiB: about 1.3 us at 3.35 TB/s, the gap a
  /// dependent second kernel adds on H100 even inside a CUDA graph).
  double merge_launch_bytes = 4.0 * 1024 * 1024;
  /// false: never share (every query one private segment, still chunked): plain paged decode.
  bool enable_sharing = true;
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
}

inline HostBlockTableView view_of(const BlockTables& tables, std::int32_t block_size) {
  expects(tables.num_seqs >= 0, "tables.num_seqs", tables.num_seqs, "must be >= 0");
  expects(tables.max_blocks_per_seq >= 0, "tables.max_blocks_per_seq", tables.max_blocks_per_seq,
          "must be >= 0");
  expects(tables.context_lens.size() == static_cast<std::size_t>(tables.num_seqs),
          "tables.context_lens.size()", tables.context_lens.size(), "must equal num_seqs");
  expects(tables.block_tables.size() == static_cast<std::size_t>(tables.num_seqs) *
                                            static_cast<std::size_t>(tables.max_blocks_per_seq),
          "tables.block_tables.size()", tables.block_tables.size(),
          "must equal num_seqs * max_blocks_per_seq");
  return {block_size, tables.num_seqs, tables.max_blocks_per_seq, tables.block_tables.data(),
          tables.context_lens.data()};
}

}  // namespace detail

/**
 * @brief 64-bit fingerprint of a batch: num_seqs, block_size, every context length and the
 * block-table entries the contexts use (padding and the row stride are ignored). A plan carries
 * the fingerprint of its batch (RadixPlan::batch_fingerprint) so a launcher can reject a stale
 * plan; any single changed value is always detected.
 * @throw InvalidArgument on an inconsistent batch (as plan()).
 */
inline std::uint64_t fingerprint_batch(const HostBlockTableView& batch) {
  detail::check_block_table_view(batch);
  return detail::fingerprint_unchecked(batch);
}

/// @brief fingerprint_batch over BlockTables (e.g. SequenceManager::export_block_tables).
/// @throw InvalidArgument if the arrays' sizes disagree or the batch is inconsistent.
inline std::uint64_t fingerprint_batch(const BlockTables& tables, std::int32_t block_size) {
  return fingerprint_batch(detail::view_of(tables, block_size));
}

/**
 * @brief Plans one batch: shared segments, private segments, chunks, partials and merge lists.
 * @param batch the batch's block tables; row q is query q of the plan.
 * @param options cost model and chunking parameters.
 * @param stats if not null, receives what was decided.
 * @return a plan that passes validate_radix_plan for batch.context_lens, with
 * batch_fingerprint = fingerprint_batch(batch). Every chunk's row holds the same block ids as the
 * row of each query it serves over the chunk's token range. A query with context 0 has no
 * partials; each query's partials are listed in token order.
 * @throw InvalidArgument for invalid options, a negative size, a null array, a context length
 * below 0 or past max_blocks_per_seq * block_size, or a block id < 0 among the entries a context
 * uses (the message names the row and position).
 */
inline RadixPlan plan(const HostBlockTableView& batch, const PlannerOptions& options = {},
                      PlanStats* stats = nullptr) {
  detail::check_planner_options(options);
  detail::check_block_table_view(batch);
  detail::BlockTrie trie;
  detail::build_block_trie(batch, trie);

  detail::CostModel model;
  model.token_bytes = 2.0 * options.num_kv_heads * options.head_dim * options.kv_element_bytes;
  model.partial_bytes = 2.0 * options.num_q_heads * (options.head_dim + 1.0) * 4.0;
  model.segment_bytes = options.segment_overhead_bytes;
  model.merge_bytes = options.merge_launch_bytes;
  model.enable_sharing = options.enable_sharing;
  detail::SharingDecision decision;
  detail::decide_sharing(batch, trie, model, decision);

  detail::SegmentList segs;
  detail::build_segments(batch, trie, decision.shared, segs);
  double chosen = decision.shared_cost + (segs.any_query_merges ? model.merge_bytes : 0.0);
  if (segs.num_shared > 0 && !(chosen < decision.unshared_cost)) {
    // Sharing does not pay for the merge step it brings: plain paged decode.
    std::fill(decision.shared.begin(), decision.shared.end(), std::uint8_t{0});
    detail::build_segments(batch, trie, decision.shared, segs);
    chosen = decision.unshared_cost;
  }

  // Split-KV: spread the work over the SMs (see PlannerOptions).
  const std::int64_t group = options.num_q_heads / options.num_kv_heads;
  std::int64_t work = 0;
  for (const auto& seg : segs.segments) {
    const std::int64_t tiles = detail::ceil_div(seg.num_queries * group, options.rows_per_tile);
    work += std::int64_t{seg.end - seg.begin} * options.num_kv_heads * tiles;
  }
  detail::ChunkParams cp;
  cp.align = detail::ceil_div(options.chunk_alignment_tokens, batch.block_size) * batch.block_size;
  if (options.max_chunk_tokens > 0 && cp.align > options.max_chunk_tokens) {
    cp.align = options.chunk_alignment_tokens;  // divides max_chunk_tokens (checked above)
  }
  cp.min_tokens = options.min_chunk_tokens;
  cp.max_tokens = options.max_chunk_tokens > 0 ? options.max_chunk_tokens / cp.align * cp.align : 0;
  const std::int64_t ctas_per_sm =
      options.ctas_per_sm > 0 ? options.ctas_per_sm : (options.head_dim <= 128 ? 2 : 1);
  cp.target = std::max<std::int64_t>(
      detail::ceil_div(work, std::int64_t{options.num_sms} * ctas_per_sm), cp.min_tokens);
  if (cp.max_tokens > 0) cp.target = std::min(cp.target, cp.max_tokens);

  RadixPlan result;
  detail::emit_plan(batch.num_seqs, segs, cp, result);
  result.batch_fingerprint = detail::fingerprint_unchecked(batch);
  if (stats != nullptr) {
    stats->num_shared_segments = segs.num_shared;
    stats->num_private_segments = static_cast<std::int32_t>(segs.segments.size()) - segs.num_shared;
    stats->num_trie_nodes = static_cast<std::int32_t>(trie.nodes.size());
    stats->chunk_target_tokens = static_cast<std::int32_t>(
        std::min<std::int64_t>(cp.target, std::numeric_limits<std::int32_t>::max()));
    stats->modelled_bytes = chosen;
    stats->modelled_bytes_unshared = decision.unshared_cost;
  }
  return result;
}

/**
 * @brief Plans a batch given as BlockTables (e.g. from SequenceManager::export_block_tables).
 * @param tables the batch; @param block_size tokens per block, >= 1.
 * @throw InvalidArgument as plan(const HostBlockTableView&), or if the arrays' sizes disagree.
 */
inline RadixPlan plan(const BlockTables& tables, std::int32_t block_size,
                      const PlannerOptions& options = {}, PlanStats* stats = nullptr) {
  return plan(detail::view_of(tables, block_size), options, stats);
}

/**
 * @brief Plans the batch `batch` of `manager`'s live sequences (row i = batch[i]).
 * @throw InvalidArgument if a sequence is not live, or as plan(const HostBlockTableView&).
 */
inline RadixPlan plan(const SequenceManager& manager, const std::vector<SequenceId>& batch,
                      const PlannerOptions& options = {}, PlanStats* stats = nullptr) {
  const BlockTables tables = manager.export_block_tables(batch);
  return plan(tables, manager.block_size(), options, stats);
}

/**
 * @brief Checks that `plan` was built for `batch` and is safe to execute on it: the fingerprint
 * matches, the plan passes validate_radix_plan, and every chunk's row holds the same block ids as
 * the row of each query it serves over the chunk's token range (what lets a kernel read a shared
 * chunk once for all its queries).
 * @throw StateError if plan.batch_fingerprint is not the batch's (a stale plan: the sequences
 * changed since planning); InvalidArgument if the batch is inconsistent, the plan is invalid, or
 * a chunk serves a query whose blocks differ from the chunk row's.
 */
inline void check_plan_for_batch(const RadixPlan& plan, const HostBlockTableView& batch) {
  const std::uint64_t fingerprint = fingerprint_batch(batch);
  expects<StateError>(
      plan.batch_fingerprint == fingerprint, "plan.batch_fingerprint", plan.batch_fingerprint,
      "does not match the batch (a stale plan: rebuild it after the batch changes)");
  validate_radix_plan(
      plan, std::vector<std::int32_t>(batch.context_lens, batch.context_lens + batch.num_seqs));
  const auto row = [&](std::int32_t s) {
    return batch.block_tables + static_cast<std::ptrdiff_t>(s) * batch.max_blocks_per_seq;
  };
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const auto ci = static_cast<std::size_t>(c);
    const std::int32_t* chunk_row = row(plan.chunk_row[ci]);
    const std::int32_t first = plan.chunk_token_begin[ci] / batch.block_size;
    const std::int32_t last = (plan.chunk_token_end[ci] - 1) / batch.block_size;
    for (auto p = plan.chunk_query_indptr[ci]; p < plan.chunk_query_indptr[ci + 1]; ++p) {
      const std::int32_t q = plan.chunk_queries[static_cast<std::size_t>(p)];
      const std::int32_t* query_row = row(q);
      for (std::int32_t b = first; b <= last; ++b) {
        expects_that(query_row[b] == chunk_row[b], "plan chunk ", c, " (row ", plan.chunk_row[ci],
                     ") serves query ", q, " whose block ", b, " is ", query_row[b],
                     ", not the chunk row's ", chunk_row[b]);
      }
    }
  }
}

/// @brief check_plan_for_batch over BlockTables.
inline void check_plan_for_batch(const RadixPlan& plan, const BlockTables& tables,
                                 std::int32_t block_size) {
  check_plan_for_batch(plan, detail::view_of(tables, block_size));
}

}  // namespace radix_attention
