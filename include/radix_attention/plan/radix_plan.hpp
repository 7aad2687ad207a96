#pragma once
/// @file
/// RadixPlan: what the batch planner hands the radix-decode kernel for one batch
/// (docs/architecture.md, "Data contracts"). Plain C++17 data + validation; the kernel side
/// (DeviceRadixPlan) packs it for the GPU.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

/**
 * @brief A batch's work, as flat int32 CSR arrays.
 *
 * Queries are the batch's rows: query `q` is the new token of the sequence in row `q` of the
 * batch's block table (`[num_queries, max_blocks_per_seq]`) and attends to its
 * `context_lens[q]` cached tokens.
 *
 * A **chunk** is a token range `[chunk_token_begin[c], chunk_token_end[c])` of block-table row
 * `chunk_row[c]`, applied to the queries `chunk_queries[chunk_query_indptr[c] ..
 * chunk_query_indptr[c + 1])`. A prefix shared by 64 queries is one segment whose chunks each
 * carry all 64 queries (the row is any one sharer's row: sharers hold the same block ids there);
 * a private suffix is a segment with one query. Long segments are split into several chunks.
 *
 * Each (chunk, query) pair is a **partial**: its id is its position `p` in `chunk_queries`.
 * Partial states are float32 outputs `[num_partials, num_q_heads, head_dim]` and natural-log
 * LSE `[num_partials, num_q_heads]`. Query `q` merges partials
 * `query_partials[query_partial_indptr[q] .. query_partial_indptr[q + 1])`, which together
 * cover `[0, context_lens[q])` exactly once. A query with zero context has no partials.
 *
 * The kernel side (DeviceRadixPlan) packs these arrays into one pinned buffer and uploads it with
 * one cudaMemcpyAsync.
 */
struct RadixPlan {
  std::int32_t num_queries = 0;
  std::vector<std::int32_t> chunk_row;
  std::vector<std::int32_t> chunk_token_begin;
  std::vector<std::int32_t> chunk_token_end;
  std::vector<std::int32_t> chunk_query_indptr{0};    ///< num_chunks + 1
  std::vector<std::int32_t> chunk_queries;            ///< num_partials
  std::vector<std::int32_t> query_partial_indptr{0};  ///< num_queries + 1
  std::vector<std::int32_t> query_partials;           ///< num_partials
  /// Segment of each chunk (chunks of one segment are consecutive); for statistics and tests.
  std::vector<std::int32_t> chunk_segment;
  std::int32_t num_segments = 0;
  /// The batch this plan was built for (see BatchPlanner): lets a launcher reject a stale plan.
  std::uint64_t batch_fingerprint = 0;
  /// Rows (query x query head of one KV head) per work item of the radix kernel; 0 = the
  /// kernel's tile, kRadixRowsPerTile (64). Batch-invariant plans use kRadixBatchInvariantRows
  /// (16), so that every row runs through the same warp layout whatever its chunk's query count
  /// (plan/radix_plan_layout.hpp).
  std::int32_t rows_per_item = 0;

  std::int32_t num_chunks() const { return static_cast<std::int32_t>(chunk_row.size()); }
  std::int32_t num_partials() const { return static_cast<std::int32_t>(chunk_queries.size()); }
};

namespace detail {

inline void check_csr(const std::vector<std::int32_t>& indptr, std::size_t rows, std::size_t nnz,
                      const char* name) {
  expects(indptr.size() == rows + 1, name, indptr.size(), "size must be rows + 1");
  expects(indptr.front() == 0, name, indptr.front(), "must start at 0");
  for (std::size_t i = 0; i < rows; ++i) {
    expects(indptr[i] <= indptr[i + 1], name, indptr[i + 1], "must be non-decreasing");
  }
  expects(static_cast<std::size_t>(indptr.back()) == nnz, name, indptr.back(),
          "must end at the number of entries");
}

}  // namespace detail

/**
 * @brief Checks that `plan` is a valid plan for a batch with the given context lengths: array
 * sizes agree, row and query ids are in range, chunk ranges lie inside the context of every
 * query they serve, each query's partials belong to chunks that serve it and cover
 * `[0, context_lens[q])` exactly once.
 * @param plan the plan to check.
 * @param context_lens the batch's context lengths, one per query.
 * @throw InvalidArgument naming the first offending field and value.
 */
inline void validate_radix_plan(const RadixPlan& plan,
                                const std::vector<std::int32_t>& context_lens) {
  const auto num_queries = static_cast<std::size_t>(plan.num_queries);
  expects(context_lens.size() == num_queries, "context_lens.size()", context_lens.size(),
          "must equal plan.num_queries");
  const std::size_t num_chunks = plan.chunk_row.size();
  expects(plan.chunk_token_begin.size() == num_chunks, "plan.chunk_token_begin.size()",
          plan.chunk_token_begin.size(), "must equal the number of chunks");
  expects(plan.chunk_token_end.size() == num_chunks, "plan.chunk_token_end.size()",
          plan.chunk_token_end.size(), "must equal the number of chunks");
  expects(plan.chunk_segment.size() == num_chunks, "plan.chunk_segment.size()",
          plan.chunk_segment.size(), "must equal the number of chunks");
  detail::check_csr(plan.chunk_query_indptr, num_chunks, plan.chunk_queries.size(),
                    "plan.chunk_query_indptr");
  detail::check_csr(plan.query_partial_indptr, num_queries, plan.query_partials.size(),
                    "plan.query_partial_indptr");
  expects(plan.query_partials.size() == plan.chunk_queries.size(), "plan.query_partials.size()",
          plan.query_partials.size(), "must equal the number of partials");
  expects(plan.rows_per_item >= 0 && plan.rows_per_item <= 64, "plan.rows_per_item",
          plan.rows_per_item, "must be in [0, 64] (0 = the kernel's 64-row tile)");

  // Partial -> chunk, and the query each partial was computed for.
  std::vector<std::int32_t> partial_chunk(plan.chunk_queries.size());
  for (std::size_t c = 0; c < num_chunks; ++c) {
    const std::int32_t row = plan.chunk_row[c];
    const std::int32_t begin = plan.chunk_token_begin[c];
    const std::int32_t end = plan.chunk_token_end[c];
    expects(row >= 0 && static_cast<std::size_t>(row) < num_queries, "plan.chunk_row[c]", row,
            "must be a row of the batch's block table");
    expects(begin >= 0 && begin < end, "plan.chunk_token_begin[c]", begin,
            "must be >= 0 and < chunk_token_end[c]");
    expects(end <= context_lens[static_cast<std::size_t>(row)], "plan.chunk_token_end[c]", end,
            "is past the context length of the chunk's block-table row");
    expects(plan.chunk_segment[c] >= 0 && plan.chunk_segment[c] < plan.num_segments,
            "plan.chunk_segment[c]", plan.chunk_segment[c], "must be < plan.num_segments");
    for (auto p = plan.chunk_query_indptr[c]; p < plan.chunk_query_indptr[c + 1]; ++p) {
      const std::int32_t q = plan.chunk_queries[static_cast<std::size_t>(p)];
      expects(q >= 0 && static_cast<std::size_t>(q) < num_queries, "plan.chunk_queries[p]", q,
              "must be a query of the batch");
      expects(end <= context_lens[static_cast<std::size_t>(q)], "plan.chunk_token_end[c]", end,
              "is past the context length of a query the chunk serves");
      partial_chunk[static_cast<std::size_t>(p)] = static_cast<std::int32_t>(c);
    }
  }

  std::vector<std::int32_t> seen(plan.chunk_queries.size(), 0);
  std::vector<std::pair<std::int32_t, std::int32_t>> ranges;
  for (std::size_t q = 0; q < num_queries; ++q) {
    ranges.clear();
    for (auto i = plan.query_partial_indptr[q]; i < plan.query_partial_indptr[q + 1]; ++i) {
      const std::int32_t p = plan.query_partials[static_cast<std::size_t>(i)];
      expects(p >= 0 && static_cast<std::size_t>(p) < plan.chunk_queries.size(),
              "plan.query_partials[i]", p, "must be a partial id");
      expects(plan.chunk_queries[static_cast<std::size_t>(p)] == static_cast<std::int32_t>(q),
              "plan.query_partials[i]", p, "belongs to another query");
      expects(seen[static_cast<std::size_t>(p)]++ == 0, "plan.query_partials[i]", p,
              "is merged twice");
      const auto c = static_cast<std::size_t>(partial_chunk[static_cast<std::size_t>(p)]);
      ranges.emplace_back(plan.chunk_token_begin[c], plan.chunk_token_end[c]);
    }
    // Exactly-once coverage of [0, context): sorted ranges must tile it without gap or overlap.
    std::sort(ranges.begin(), ranges.end());
    std::int32_t covered_to = 0;
    for (const auto& [begin, end] : ranges) {
      // expects_that: the message is only built on failure (this runs once per partial).
      expects_that(begin == covered_to, "plan chunk range begin = ", begin,
                   ": leaves a gap or overlap at token ", covered_to, " of query ", q);
      covered_to = end;
    }
    expects(covered_to == context_lens[q], "context_lens[q]", context_lens[q],
            "is not covered exactly by the query's partials");
  }
  for (std::size_t p = 0; p < seen.size(); ++p) {
    expects(seen[p] == 1, "partial", p, "is never merged into its query");
  }
}

}  // namespace radix_attention
