#pragma once
// Shared by GPU tests and benchmarks: builds a RadixPlan from explicit segments (a token range
// of one block-table row plus the queries that attend to it), splitting long segments into
// chunks, for batches whose sharing structure is known by construction (and for plans the
// planner would never build: bad ones, odd chunkings). Serving engines use the batch planner
// (cache/batch_planner.hpp). Plain C++17.

#include <algorithm>
#include <cstdint>
#include <vector>

#include "radix_attention/core/error.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention::test {

/// A token range [begin, end) of block-table row `row`, attended to by `queries`.
struct RadixSegmentSpec {
  std::int32_t row = 0;
  std::int32_t begin = 0;
  std::int32_t end = 0;
  std::vector<std::int32_t> queries;
};

/**
 * Plan whose chunks are `segments`, each cut into chunks of at most `max_chunk_tokens` tokens
 * (equal-sized, so a split segment's chunks balance). Partials are numbered chunk by chunk;
 * each query's partial list is in chunk order. Not validated here (validate_radix_plan).
 */
inline RadixPlan radix_plan_from_segments(std::int32_t num_queries,
                                          const std::vector<RadixSegmentSpec>& segments,
                                          std::int32_t max_chunk_tokens) {
  expects(max_chunk_tokens >= 1, "max_chunk_tokens", max_chunk_tokens, "must be >= 1");
  RadixPlan plan;
  plan.num_queries = num_queries;
  std::vector<std::vector<std::int32_t>> per_query(static_cast<std::size_t>(num_queries));
  for (const RadixSegmentSpec& seg : segments) {
    const std::int32_t len = seg.end - seg.begin;
    const std::int32_t pieces = std::max(1, (len + max_chunk_tokens - 1) / max_chunk_tokens);
    for (std::int32_t i = 0; i < pieces; ++i) {
      plan.chunk_row.push_back(seg.row);
      plan.chunk_token_begin.push_back(
          seg.begin + static_cast<std::int32_t>(static_cast<std::int64_t>(len) * i / pieces));
      plan.chunk_token_end.push_back(
          seg.begin + static_cast<std::int32_t>(static_cast<std::int64_t>(len) * (i + 1) / pieces));
      plan.chunk_segment.push_back(plan.num_segments);
      for (std::int32_t q : seg.queries) {
        if (q >= 0 && q < num_queries) {
          per_query[static_cast<std::size_t>(q)].push_back(plan.num_partials());
        }
        plan.chunk_queries.push_back(q);
      }
      plan.chunk_query_indptr.push_back(plan.num_partials());
    }
    ++plan.num_segments;
  }
  plan.query_partial_indptr.assign(1, 0);
  for (const auto& list : per_query) {
    plan.query_partials.insert(plan.query_partials.end(), list.begin(), list.end());
    plan.query_partial_indptr.push_back(static_cast<std::int32_t>(plan.query_partials.size()));
  }
  return plan;
}

}  // namespace radix_attention::test
