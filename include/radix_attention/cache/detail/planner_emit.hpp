#pragma once
/// @file
/// Batch planner internals: segments from the sharing decision, split-KV chunking, and the
/// RadixPlan arrays (included by cache/batch_planner.hpp; not a public header).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/cache/radix_plan.hpp"

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
};

/// Shared nodes become one segment each (in trie pre-order); every maximal run of a query's
/// private nodes plus its partial last block becomes one private segment (by query, in token
/// order). A query's segments tile [0, context_len) by construction.
template <class View>
void build_segments(const View& batch, const BlockTrie& trie,
                    const std::vector<std::uint8_t>& shared, SegmentList& out) {
  out.segments.clear();
  out.queries.clear();
  out.num_shared = 0;
  out.any_query_merges = false;
  const std::int32_t bs = batch.block_size;
  for (std::size_t i = 0; i < trie.nodes.size(); ++i) {
    if (!shared[i]) continue;
    const TrieNode& node = trie.nodes[i];
    const auto offset = static_cast<std::int32_t>(out.queries.size());
    out.queries.insert(out.queries.end(), trie.order.begin() + node.query_begin,
                       trie.order.begin() + node.query_end);
    std::sort(out.queries.begin() + offset, out.queries.end());
    out.segments.push_back({out.queries[static_cast<std::size_t>(offset)], node.begin_block * bs,
                            node.end_block * bs, offset, node.num_queries()});
    ++out.num_shared;
  }
  std::vector<std::int32_t> path;
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t len = batch.context_lens[q];
    if (len == 0) continue;
    path.clear();
    for (std::int32_t n = trie.last_node[static_cast<std::size_t>(q)]; n >= 0;
         n = trie.nodes[static_cast<std::size_t>(n)].parent) {
      path.push_back(n);
    }
    std::int32_t num_segments = 0;
    std::int32_t run_begin = -1;
    const auto close_run = [&](std::int32_t end) {
      if (run_begin < 0) return;
      out.segments.push_back({q, run_begin, end, static_cast<std::int32_t>(out.queries.size()), 1});
      out.queries.push_back(q);
      ++num_segments;
      run_begin = -1;
    };
    for (auto it = path.rbegin(); it != path.rend(); ++it) {
      const TrieNode& node = trie.nodes[static_cast<std::size_t>(*it)];
      if (shared[static_cast<std::size_t>(*it)]) {
        close_run(node.begin_block * bs);
        ++num_segments;
      } else if (run_begin < 0) {
        run_begin = node.begin_block * bs;
      }
    }
    const std::int32_t full_end = trie.full_blocks[static_cast<std::size_t>(q)] * bs;
    if (full_end < len && run_begin < 0) run_begin = full_end;
    close_run(len);
    out.any_query_merges = out.any_query_merges || num_segments >= 2;
  }
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

/// Splits every segment into chunks and writes the plan's arrays (num_queries, fingerprint and
/// validation are the caller's). Each query's partials are listed in token order.
inline void emit_plan(std::int32_t num_queries, const SegmentList& segs, const ChunkParams& cp,
                      RadixPlan& plan) {
  plan.num_queries = num_queries;
  plan.num_segments = static_cast<std::int32_t>(segs.segments.size());
  std::vector<std::int32_t> partial_begin;  // token begin of each partial's chunk, for sorting
  std::vector<std::int32_t> per_query(static_cast<std::size_t>(num_queries) + 1, 0);
  for (std::size_t s = 0; s < segs.segments.size(); ++s) {
    const PlanSegment& seg = segs.segments[s];
    const std::int64_t len = chunk_length(seg.end - seg.begin, cp);
    for (std::int64_t at = seg.begin; at < seg.end; at += len) {
      const auto b = static_cast<std::int32_t>(at);
      plan.chunk_row.push_back(seg.row);
      plan.chunk_token_begin.push_back(b);
      plan.chunk_token_end.push_back(
          static_cast<std::int32_t>(std::min<std::int64_t>(seg.end, at + len)));
      plan.chunk_segment.push_back(static_cast<std::int32_t>(s));
      const auto first = segs.queries.begin() + seg.query_offset;
      plan.chunk_queries.insert(plan.chunk_queries.end(), first, first + seg.num_queries);
      partial_begin.insert(partial_begin.end(), static_cast<std::size_t>(seg.num_queries), b);
      plan.chunk_query_indptr.push_back(static_cast<std::int32_t>(plan.chunk_queries.size()));
      for (auto q = first; q != first + seg.num_queries; ++q) {
        ++per_query[static_cast<std::size_t>(*q) + 1];
      }
    }
  }
  for (std::size_t q = 0; q < static_cast<std::size_t>(num_queries); ++q) {
    per_query[q + 1] += per_query[q];
  }
  plan.query_partial_indptr = per_query;
  plan.query_partials.resize(plan.chunk_queries.size());
  for (std::size_t p = 0; p < plan.chunk_queries.size(); ++p) {
    const auto q = static_cast<std::size_t>(plan.chunk_queries[p]);
    plan.query_partials[static_cast<std::size_t>(per_query[q]++)] = static_cast<std::int32_t>(p);
  }
  for (std::size_t q = 0; q < static_cast<std::size_t>(num_queries); ++q) {
    auto first = plan.query_partials.begin() + plan.query_partial_indptr[q];
    auto last = plan.query_partials.begin() + plan.query_partial_indptr[q + 1];
    std::sort(first, last, [&](std::int32_t a, std::int32_t b) {
      return partial_begin[static_cast<std::size_t>(a)] <
             partial_begin[static_cast<std::size_t>(b)];
    });
  }
}

}  // namespace radix_attention::detail
