#pragma once
/// @file
/// Batch planner internals: everything after the block trie — sharing decision, segments,
/// split-KV chunking, plan arrays, statistics — shared by the stateless plan() and the stateful
/// BatchPlanner, so that both give the same plan for the same trie (included by
/// cache/batch_planner.hpp; not a public header).
///
/// A BatchPlanner also takes a shortcut the stateless plan() cannot: when the trie kept its
/// shape since the last step (only private leaves grew) and the cost model's decision did not
/// change, the segments are the last step's with each query's final private run ending at its
/// new context length, and when every segment also keeps its chunking, the plan is the last
/// plan with those chunk ends moved (patch_segments, patch_plan). Both check their conditions
/// exactly; when one fails the stages run in full.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "radix_attention/cache/detail/planner_cost.hpp"
#include "radix_attention/cache/detail/planner_emit.hpp"
#include "radix_attention/cache/detail/planner_input.hpp"
#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention::detail {

/// State of the stages, kept by a BatchPlanner between steps (its memory, and what the last
/// step decided, for the shortcut).
struct PlannerScratch {
  SharingDecision decision;
  SegmentList segments;               ///< the last plan's segments
  EmitScratch emit;                   ///< the last plan's chunking
  std::vector<std::uint8_t> decided;  ///< the decision before the no-merge fallback
  std::int32_t decided_num_shared = 0;
  bool decided_merges = false;
  bool fell_back = false;  ///< the plan is all private although the decision shared
  double chosen = 0;       ///< modelled cost of the plan
};

inline CostModel cost_model(const PlannerOptions& options) {
  CostModel model;
  model.token_bytes = 2.0 * options.num_kv_heads * options.head_dim * options.kv_element_bytes;
  model.partial_bytes = 2.0 * options.num_q_heads * (options.head_dim + 1.0) * 4.0;
  model.segment_bytes = options.segment_overhead_bytes;
  model.merge_bytes = options.merge_launch_bytes;
  model.enable_sharing = options.enable_sharing;
  return model;
}

/// Segments from the decision (scratch.decision), or all private when sharing does not pay
/// for the merge step it brings (plain paged decode); aligned to absolute chunks when
/// `invariant_chunk` > 0 (batch-invariant plans).
inline void segments_stage(const BatchRows& batch, const BlockTrie& trie, const CostModel& model,
                           std::int64_t invariant_chunk, PlannerScratch& scratch) {
  SharingDecision& decision = scratch.decision;
  SegmentList& segs = scratch.segments;
  build_segments(batch, trie, decision.shared, segs);
  scratch.decided.assign(decision.shared.begin(), decision.shared.end());
  scratch.decided_num_shared = segs.num_shared;
  scratch.decided_merges = segs.any_query_merges;
  scratch.chosen = decision.shared_cost + (segs.any_query_merges ? model.merge_bytes : 0.0);
  scratch.fell_back = segs.num_shared > 0 && !(scratch.chosen < decision.unshared_cost);
  if (scratch.fell_back) {
    std::fill(decision.shared.begin(), decision.shared.end(), std::uint8_t{0});
    build_segments(batch, trie, decision.shared, segs);
    scratch.chosen = decision.unshared_cost;
  }
  if (invariant_chunk > 0) align_segments_to_chunks(batch, invariant_chunk, segs);
}

/// Chunk length of batch-invariant plans, or 0 for the default plans.
inline std::int64_t invariant_chunk(const PlannerOptions& options) {
  return options.deterministic ? options.deterministic_chunk_tokens : 0;
}

/// rows_per_item of the plans `options` produce.
inline std::int32_t plan_rows_per_item(const PlannerOptions& options) {
  return options.deterministic ? kRadixBatchInvariantRows : 0;
}

/// The shortcut for the segments: true (and the segments updated in place) if the decision
/// equals the last one on an unchanged trie shape and every query's final run still exists
/// exactly where it did; false (nothing changed) otherwise. No allocation: cannot throw.
inline bool patch_segments(const BatchRows& batch, const BlockTrie& trie, const CostModel& model,
                           PlannerScratch& scratch) {
  const SharingDecision& decision = scratch.decision;
  if (decision.shared != scratch.decided) return false;
  const double chosen = decision.shared_cost + (scratch.decided_merges ? model.merge_bytes : 0.0);
  const bool fall_back = scratch.decided_num_shared > 0 && !(chosen < decision.unshared_cost);
  if (fall_back != scratch.fell_back) return false;
  SegmentList& segs = scratch.segments;
  const std::int32_t bs = batch.block_size;
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    // A final run exists iff a private run is open after the query's last node or its last
    // block is partial (build_segments).
    const std::int32_t n = trie.last_node[static_cast<std::size_t>(q)];
    const std::int32_t len = batch.context_lens[q];
    const bool open = n >= 0 && segs.open_after[static_cast<std::size_t>(n)] >= 0;
    const bool exists =
        len > 0 && (open || trie.full_blocks[static_cast<std::size_t>(q)] * bs < len);
    if (exists != (segs.final_run[static_cast<std::size_t>(q)] >= 0)) return false;
  }
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t s = segs.final_run[static_cast<std::size_t>(q)];
    if (s >= 0) segs.segments[static_cast<std::size_t>(s)].end = batch.context_lens[q];
  }
  scratch.chosen = fall_back ? decision.unshared_cost : chosen;
  return true;
}

/// Split-KV parameters: spread the work over the SMs (see PlannerOptions); batch-invariant
/// plans cut every deterministic_chunk_tokens tokens instead (segments start on such a
/// boundary, see align_segments_to_chunks).
inline ChunkParams chunk_stage(const BatchRows& batch, const SegmentList& segs,
                               const PlannerOptions& options) {
  if (options.deterministic) {
    const std::int64_t c = options.deterministic_chunk_tokens;
    return ChunkParams{c, 1, c, c};
  }
  const std::int64_t group = options.num_q_heads / options.num_kv_heads;
  std::int64_t work = 0;
  for (const auto& seg : segs.segments) {
    const std::int64_t tiles = ceil_div(seg.num_queries * group, options.rows_per_tile);
    work += std::int64_t{seg.end - seg.begin} * options.num_kv_heads * tiles;
  }
  ChunkParams cp;
  cp.align = ceil_div(options.chunk_alignment_tokens, batch.block_size) * batch.block_size;
  if (options.max_chunk_tokens > 0 && cp.align > options.max_chunk_tokens) {
    cp.align = options.chunk_alignment_tokens;  // divides max_chunk_tokens (checked)
  }
  cp.min_tokens = options.min_chunk_tokens;
  cp.max_tokens = options.max_chunk_tokens > 0 ? options.max_chunk_tokens / cp.align * cp.align : 0;
  const std::int64_t ctas_per_sm =
      options.ctas_per_sm > 0 ? options.ctas_per_sm : radix_ctas_per_sm(options.head_dim);
  cp.target = std::max<std::int64_t>(ceil_div(work, std::int64_t{options.num_sms} * ctas_per_sm),
                                     cp.min_tokens);
  if (cp.max_tokens > 0) cp.target = std::min(cp.target, cp.max_tokens);
  return cp;
}

/// The shortcut for the plan, after patch_segments: true (and `plan`, the last step's plan,
/// updated in place) if every segment keeps its chunk boundaries but its end (one chunk then
/// and now, or the same chunk length and count), so that only the final runs' last chunks end
/// elsewhere. No allocation: cannot throw.
inline bool patch_plan(const BatchRows& batch, const ChunkParams& cp, PlannerScratch& scratch,
                       RadixPlan& plan) {
  const SegmentList& segs = scratch.segments;
  EmitScratch& emit = scratch.emit;
  for (std::size_t s = 0; s < segs.segments.size(); ++s) {
    const PlanSegment& seg = segs.segments[s];
    const std::int64_t length = seg.end - seg.begin;
    const std::int64_t len = chunk_length(length, cp);
    const std::int32_t chunks = emit.last_chunk[s] - (s == 0 ? 0 : emit.last_chunk[s - 1] + 1) + 1;
    if (len >= length) {
      if (chunks != 1) return false;
    } else if (len != emit.chunk_len[s] || len * (chunks - 1) >= length || len * chunks < length) {
      return false;
    }
  }
  for (std::size_t s = 0; s < segs.segments.size(); ++s) {
    const PlanSegment& seg = segs.segments[s];
    emit.chunk_len[s] = chunk_length(seg.end - seg.begin, cp);
  }
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t s = segs.final_run[static_cast<std::size_t>(q)];
    if (s < 0) continue;
    plan.chunk_token_end[static_cast<std::size_t>(
        scratch.emit.last_chunk[static_cast<std::size_t>(s)])] = batch.context_lens[q];
  }
  return true;
}

inline void write_stats(const BlockTrie& trie, const ChunkParams& cp, const PlannerScratch& scratch,
                        PlanStats* stats) {
  if (stats == nullptr) return;
  const SegmentList& segs = scratch.segments;
  stats->num_shared_segments = segs.num_shared;
  stats->num_private_segments = static_cast<std::int32_t>(segs.segments.size()) - segs.num_shared;
  stats->num_trie_nodes = static_cast<std::int32_t>(trie.nodes.size());
  stats->chunk_target_tokens = static_cast<std::int32_t>(
      std::min<std::int64_t>(cp.target, std::numeric_limits<std::int32_t>::max()));
  stats->modelled_bytes = scratch.chosen;
  stats->modelled_bytes_unshared = scratch.decision.unshared_cost;
}

/// Plans `batch` (its context lengths and block size; block ids are not read) over `trie`,
/// built for it, with options already checked, into `plan`; writes `fingerprint` into it.
inline void plan_from_trie(const BatchRows& batch, const BlockTrie& trie,
                           const PlannerOptions& options, std::uint64_t fingerprint,
                           PlannerScratch& scratch, RadixPlan& plan, PlanStats* stats) {
  const CostModel model = cost_model(options);
  decide_sharing(batch, trie, model, scratch.decision);
  segments_stage(batch, trie, model, invariant_chunk(options), scratch);
  const ChunkParams cp = chunk_stage(batch, scratch.segments, options);
  emit_plan(batch.num_seqs, scratch.segments, cp, scratch.emit, plan);
  plan.batch_fingerprint = fingerprint;
  plan.rows_per_item = plan_rows_per_item(options);
  write_stats(trie, cp, scratch, stats);
}

}  // namespace radix_attention::detail
