#pragma once
/// @file
/// Batch planner internals: segments from the sharing decision, split-KV chunking, and the
/// RadixPlan arrays (included by cache/batch_planner.hpp; not a public header).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention::detail {

struct PlanSegment {
  std::int32_t row = 0;    ///< block-table row the kernel reads (the smallest sharer)
  std::int32_t begin = 0;  ///< token range [begin, end)
  std::int32_t end = 0;
  std::int32_t query_offset = 0;  ///< queries: SegmentList::queries[query_offset ..+ num_queries)
  std::int32_t num_queries = 0;
};

struct SegmentList {
  std::vector<PlanSegment> segments;
  std::vector<std::int32_t> queries;
  std::int32_t num_shared = 0;
  bool any_query_merges = false;  ///< some query has >= 2 segments (before chunking)
  /// Some query has a private run before one of its shared segments, so its partials (shared
  /// segments are listed first) are not in token order; emit_plan then sorts them.
  bool partials_out_of_order = false;
  // Per trie node, working arrays of build_segments (kept for their memory).
  std::vector<std::int32_t> open_after, segments_after, closed_after, closed_next, closed_begin;
  std::vector<std::int32_t> closed_stack;
  /// Per query: its last private segment (the run ending at its context length), or -1.
  std::vector<std::int32_t> final_run;
};

/// Shared nodes become one segment each (in trie pre-order); every maximal run of a query's
/// private nodes plus its partial last block becomes one private segment (by query, in token
/// order). A query's segments tile [0, context_len) by construction.
///
/// All queries through a node share its path, so what a walk down the path would find is
/// computed once per node (pre-order: parents first): the begin of the private run still open
/// after the node, the segments so far, and the runs closed at shared nodes above it (a linked
/// list, usually empty). Each query then costs O(1 + its closed runs).
inline void build_segments(const BatchRows& batch, const BlockTrie& trie,
                           const std::vector<std::uint8_t>& shared, SegmentList& out) {
  out.segments.clear();
  out.queries.clear();
  out.num_shared = 0;
  out.any_query_merges = false;
  out.partials_out_of_order = false;
  const std::int32_t bs = batch.block_size;
  const std::size_t num_nodes = trie.nodes.size();
  out.open_after.resize(num_nodes);
  out.segments_after.resize(num_nodes);
  out.closed_after.resize(num_nodes);
  out.closed_next.resize(num_nodes);
  out.closed_begin.resize(num_nodes);
  out.final_run.assign(static_cast<std::size_t>(batch.num_seqs), -1);
  for (std::size_t i = 0; i < num_nodes; ++i) {
    const TrieNode& node = trie.nodes[i];
    const auto p = static_cast<std::size_t>(node.parent);
    const bool top = node.parent < 0;
    const std::int32_t open = top ? -1 : out.open_after[p];
    std::int32_t segments = top ? 0 : out.segments_after[p];
    std::int32_t closed = top ? -1 : out.closed_after[p];
    if (shared[i]) {
      if (open >= 0) {  // the private run above this shared node ends at its begin
        out.closed_begin[i] = open;
        out.closed_next[i] = closed;
        closed = static_cast<std::int32_t>(i);
        ++segments;
      }
      ++segments;
      out.open_after[i] = -1;
      const auto offset = static_cast<std::int32_t>(out.queries.size());
      out.queries.insert(out.queries.end(), trie.order.begin() + node.query_begin,
                         trie.order.begin() + node.query_end);
      if (!std::is_sorted(out.queries.begin() + offset, out.queries.end())) {
        std::sort(out.queries.begin() + offset, out.queries.end());
      }
      out.segments.push_back({out.queries[static_cast<std::size_t>(offset)], node.begin_block * bs,
                              node.end_block * bs, offset, node.num_queries()});
      ++out.num_shared;
    } else {
      out.open_after[i] = open >= 0 ? open : node.begin_block * bs;
    }
    out.segments_after[i] = segments;
    out.closed_after[i] = closed;
  }
  const auto private_segment = [&](std::int32_t q, std::int32_t begin, std::int32_t end) {
    out.segments.push_back({q, begin, end, static_cast<std::int32_t>(out.queries.size()), 1});
    out.queries.push_back(q);
  };
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t len = batch.context_lens[q];
    if (len == 0) continue;
    const std::int32_t n = trie.last_node[static_cast<std::size_t>(q)];
    const auto ni = static_cast<std::size_t>(n);
    std::int32_t open = n >= 0 ? out.open_after[ni] : -1;
    std::int32_t segments = n >= 0 ? out.segments_after[ni] : 0;
    if (n >= 0 && out.closed_after[ni] >= 0) {
      // Runs closed above shared nodes, bottom-up in the list: emitted top-down.
      out.partials_out_of_order = true;
      out.closed_stack.clear();
      for (std::int32_t c = out.closed_after[ni]; c >= 0;
           c = out.closed_next[static_cast<std::size_t>(c)]) {
        out.closed_stack.push_back(c);
      }
      for (auto it = out.closed_stack.rbegin(); it != out.closed_stack.rend(); ++it) {
        const auto c = static_cast<std::size_t>(*it);
        private_segment(q, out.closed_begin[c], trie.nodes[c].begin_block * bs);
      }
    }
    const std::int32_t full_end = trie.full_blocks[static_cast<std::size_t>(q)] * bs;
    if (full_end < len && open < 0) open = full_end;
    if (open >= 0) {
      out.final_run[static_cast<std::size_t>(q)] = static_cast<std::int32_t>(out.segments.size());
      private_segment(q, open, len);
      ++segments;
    }
    out.any_query_merges = out.any_query_merges || segments >= 2;
  }
}

/// Batch-invariant segments (PlannerOptions::deterministic): every segment boundary inside a
/// query's context is rounded down to a multiple of `chunk`, so that splitting each segment at
/// multiples of `chunk` gives every query the chunks [0, chunk), [chunk, 2 chunk), ...,
/// [k chunk, len) whatever its sharing. Valid because all queries of a shared node share the
/// whole path above it: [round_down(begin), begin) is theirs in common too. Segments that
/// become empty are dropped; a query whose context ended on a shared node gets a private
/// segment [round_down(len), len). Partials then need sorting (a query's chunks no longer
/// come in token order from the shared-first emission).
inline void align_segments_to_chunks(const BatchRows& batch, std::int64_t chunk,
                                     SegmentList& segs) {
  const auto down = [chunk](std::int32_t t) {
    return static_cast<std::int32_t>(t / chunk * chunk);
  };
  const std::size_t n = segs.segments.size();
  std::vector<std::uint8_t> is_final(n, 0);
  for (const std::int32_t s : segs.final_run) {
    if (s >= 0) is_final[static_cast<std::size_t>(s)] = 1;
  }
  std::size_t kept = 0;
  std::int32_t shared_kept = 0;
  for (std::size_t s = 0; s < n; ++s) {
    PlanSegment seg = segs.segments[s];
    seg.begin = down(seg.begin);
    if (!is_final[s]) seg.end = down(seg.end);
    if (seg.begin >= seg.end) continue;
    if (static_cast<std::int32_t>(s) < segs.num_shared) ++shared_kept;  // shared come first
    if (is_final[s]) {  // private: its one query is queries[query_offset]
      const std::int32_t q = segs.queries[static_cast<std::size_t>(seg.query_offset)];
      segs.final_run[static_cast<std::size_t>(q)] = static_cast<std::int32_t>(kept);
    }
    segs.segments[kept++] = seg;
  }
  segs.segments.resize(kept);
  segs.num_shared = shared_kept;
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t len = batch.context_lens[q];
    if (len == 0 || segs.final_run[static_cast<std::size_t>(q)] >= 0 || down(len) == len) {
      continue;
    }
    segs.final_run[static_cast<std::size_t>(q)] = static_cast<std::int32_t>(segs.segments.size());
    segs.segments.push_back({q, down(len), len, static_cast<std::int32_t>(segs.queries.size()), 1});
    segs.queries.push_back(q);
  }
  segs.partials_out_of_order = true;
}

// 64-bit throughout: a token position plus a chunk length may pass the int32 range.
struct ChunkParams {
  std::int64_t target = 0;  ///< preferred chunk length
  std::int64_t min_tokens = 1;
  std::int64_t max_tokens = 0;  ///< 0: no limit; else a multiple of align
  std::int64_t align = 1;
};

inline std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// Length of every chunk but the last when splitting a segment of `length` tokens: the most
/// chunks up to length / target such that the last chunk keeps >= min_tokens (chunks before it
/// are at least as long), never a chunk over max_tokens. Chunk lengths are multiples of align.
inline std::int64_t chunk_length(std::int64_t length, const ChunkParams& p) {
  // One chunk (what the loop below gives too), without its divisions: the common case of a
  // private suffix, and a plan's cost is per segment.
  if (length <= p.target && (p.max_tokens == 0 || length <= p.max_tokens)) return length;
  const std::int64_t n_lo = p.max_tokens > 0 ? ceil_div(length, p.max_tokens) : 1;
  const std::int64_t n_hi = std::max(n_lo, ceil_div(length, p.target));
  std::int64_t len = length;
  for (std::int64_t n = n_hi; n >= n_lo; --n) {
    len = ceil_div(ceil_div(length, n), p.align) * p.align;
    const std::int64_t count = ceil_div(length, len);
    if (count == 1 || length - (count - 1) * len >= p.min_tokens) break;
  }
  return std::min(len, length);
}

/// Memory of emit_plan kept between calls.
struct EmitScratch {
  std::vector<std::int64_t> chunk_len;      ///< per segment
  std::vector<std::int32_t> last_chunk;     ///< per segment: its last chunk in the plan
  std::vector<std::int32_t> partial_begin;  ///< token begin of each partial's chunk
  std::vector<std::int32_t> cursor;         ///< per query: next slot in query_partials
};

/// Splits every segment into chunks and writes the plan's arrays (num_queries, fingerprint and
/// validation are the caller's). Each query's partials are listed in token order. Sizes are
/// counted first so that every array is written in place, once.
inline void emit_plan(std::int32_t num_queries, const SegmentList& segs, const ChunkParams& cp,
                      EmitScratch& scratch, RadixPlan& plan) {
  const auto nq = static_cast<std::size_t>(num_queries);
  plan.num_queries = num_queries;
  plan.num_segments = static_cast<std::int32_t>(segs.segments.size());
  scratch.chunk_len.resize(segs.segments.size());
  scratch.last_chunk.resize(segs.segments.size());
  plan.query_partial_indptr.assign(nq + 1, 0);
  std::size_t num_chunks = 0, num_partials = 0;
  for (std::size_t s = 0; s < segs.segments.size(); ++s) {
    const PlanSegment& seg = segs.segments[s];
    const std::int64_t len = chunk_length(seg.end - seg.begin, cp);
    scratch.chunk_len[s] = len;
    const auto chunks = len == seg.end - seg.begin
                            ? 1
                            : static_cast<std::int32_t>(ceil_div(seg.end - seg.begin, len));
    num_chunks += static_cast<std::size_t>(chunks);
    num_partials += static_cast<std::size_t>(chunks) * static_cast<std::size_t>(seg.num_queries);
    const auto first = segs.queries.begin() + seg.query_offset;
    for (auto q = first; q != first + seg.num_queries; ++q) {
      plan.query_partial_indptr[static_cast<std::size_t>(*q) + 1] += chunks;
    }
  }
  for (std::size_t q = 0; q < nq; ++q) {
    plan.query_partial_indptr[q + 1] += plan.query_partial_indptr[q];
  }
  plan.chunk_row.resize(num_chunks);
  plan.chunk_token_begin.resize(num_chunks);
  plan.chunk_token_end.resize(num_chunks);
  plan.chunk_segment.resize(num_chunks);
  plan.chunk_query_indptr.resize(num_chunks + 1);
  plan.chunk_query_indptr[0] = 0;
  plan.chunk_queries.resize(num_partials);
  plan.query_partials.resize(num_partials);
  const bool sort = segs.partials_out_of_order;
  if (sort) scratch.partial_begin.resize(num_partials);
  scratch.cursor.assign(plan.query_partial_indptr.begin(), plan.query_partial_indptr.end() - 1);

  std::size_t c = 0;
  std::int32_t p = 0;
  for (std::size_t s = 0; s < segs.segments.size(); ++s) {
    const PlanSegment& seg = segs.segments[s];
    const std::int64_t len = scratch.chunk_len[s];
    const std::int32_t* first = segs.queries.data() + seg.query_offset;
    for (std::int64_t at = seg.begin; at < seg.end; at += len, ++c) {
      const auto b = static_cast<std::int32_t>(at);
      plan.chunk_row[c] = seg.row;
      plan.chunk_token_begin[c] = b;
      plan.chunk_token_end[c] =
          static_cast<std::int32_t>(std::min<std::int64_t>(seg.end, at + len));
      plan.chunk_segment[c] = static_cast<std::int32_t>(s);
      for (std::int32_t i = 0; i < seg.num_queries; ++i, ++p) {
        const std::int32_t q = first[i];
        plan.chunk_queries[static_cast<std::size_t>(p)] = q;
        if (sort) scratch.partial_begin[static_cast<std::size_t>(p)] = b;
        plan.query_partials[static_cast<std::size_t>(
            scratch.cursor[static_cast<std::size_t>(q)]++)] = p;
      }
      plan.chunk_query_indptr[c + 1] = p;
    }
    scratch.last_chunk[s] = static_cast<std::int32_t>(c) - 1;
  }
  // A query's partials come in chunk order: shared segments in trie pre-order (ancestors
  // first), then its private runs; only a private run above a shared node is out of token
  // order, so most queries are sorted already. Begins are distinct (ranges are disjoint).
  if (!sort) return;
  const auto by_begin = [&](std::int32_t x, std::int32_t y) {
    return scratch.partial_begin[static_cast<std::size_t>(x)] <
           scratch.partial_begin[static_cast<std::size_t>(y)];
  };
  for (std::size_t q = 0; q < nq; ++q) {
    auto lo = plan.query_partials.begin() + plan.query_partial_indptr[q];
    auto hi = plan.query_partials.begin() + plan.query_partial_indptr[q + 1];
    if (!std::is_sorted(lo, hi, by_begin)) std::sort(lo, hi, by_begin);
  }
}

}  // namespace radix_attention::detail
