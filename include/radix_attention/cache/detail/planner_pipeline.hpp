#pragma once
/// @file
/// Batch planner internals: everything after the block trie — sharing decision, segments,
/// split-KV chunking, plan arrays, statistics — shared by the stateless plan() and the stateful
/// BatchPlanner, so that both give the same plan for the same trie (included by
/// cache/batch_planner.hpp; not a public header).

#include <algorithm>
#include <cstdint>
#include <limits>

#include "radix_attention/cache/detail/planner_cost.hpp"
#include "radix_attention/cache/detail/planner_emit.hpp"
#include "radix_attention/cache/detail/planner_input.hpp"
#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention::detail {

/// Scratch of the stages, kept by a BatchPlanner between steps so steady-state planning
/// reuses its memory.
struct PlannerScratch {
  SharingDecision decision;
  SegmentList segments;
  EmitScratch emit;
};

/// Plans `batch` (its context lengths and block size; block ids are not read) over `trie`,
/// built for it, with options already checked. Writes `fingerprint` into the plan.
inline RadixPlan plan_from_trie(const BatchRows& batch, const BlockTrie& trie,
                                const PlannerOptions& options, std::uint64_t fingerprint,
                                PlannerScratch& scratch, PlanStats* stats) {
  CostModel model;
  model.token_bytes = 2.0 * options.num_kv_heads * options.head_dim * options.kv_element_bytes;
  model.partial_bytes = 2.0 * options.num_q_heads * (options.head_dim + 1.0) * 4.0;
  model.segment_bytes = options.segment_overhead_bytes;
  model.merge_bytes = options.merge_launch_bytes;
  model.enable_sharing = options.enable_sharing;
  SharingDecision& decision = scratch.decision;
  decide_sharing(batch, trie, model, decision);

  SegmentList& segs = scratch.segments;
  build_segments(batch, trie, decision.shared, segs);
  double chosen = decision.shared_cost + (segs.any_query_merges ? model.merge_bytes : 0.0);
  if (segs.num_shared > 0 && !(chosen < decision.unshared_cost)) {
    // Sharing does not pay for the merge step it brings: plain paged decode.
    std::fill(decision.shared.begin(), decision.shared.end(), std::uint8_t{0});
    build_segments(batch, trie, decision.shared, segs);
    chosen = decision.unshared_cost;
  }

  // Split-KV: spread the work over the SMs (see PlannerOptions).
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

  RadixPlan result;
  emit_plan(batch.num_seqs, segs, cp, scratch.emit, result);
  result.batch_fingerprint = fingerprint;
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

}  // namespace radix_attention::detail
