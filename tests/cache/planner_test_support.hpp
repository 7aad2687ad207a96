#pragma once
// Shared helpers of the batch planner tests: hand-built batches and the plan invariants the
// radix-decode kernel relies on, checked independently of the library's own checks.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"

namespace planner_test {

namespace ra = radix_attention;

// A batch as rows of block ids; export() pads to a common stride with -1.
struct Batch {
  std::int32_t block_size = 16;
  std::vector<std::vector<std::int32_t>> rows;
  std::vector<std::int32_t> context_lens;
  std::vector<std::int32_t> table;  // filled by view()
  std::int32_t stride = 0;

  // Appends a query whose row is `blocks` and whose context is `len` tokens.
  void add(std::vector<std::int32_t> blocks, std::int32_t len) {
    rows.push_back(std::move(blocks));
    context_lens.push_back(len);
  }
  ra::BlockTableView view() {
    stride = 1;
    for (const auto& r : rows) stride = std::max(stride, static_cast<std::int32_t>(r.size()));
    table.assign(rows.size() * static_cast<std::size_t>(stride), -1);
    for (std::size_t q = 0; q < rows.size(); ++q) {
      std::copy(rows[q].begin(), rows[q].end(),
                table.begin() + static_cast<std::ptrdiff_t>(q * stride));
    }
    return {table.data(),
            context_lens.data(),
            static_cast<std::int32_t>(rows.size()),
            stride,
            stride,
            -1};
  }
};

// Consecutive block ids [first, first + n).
inline std::vector<std::int32_t> iota_blocks(std::int32_t first, std::int32_t n) {
  std::vector<std::int32_t> v(static_cast<std::size_t>(n));
  for (std::int32_t i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = first + i;
  return v;
}

inline std::vector<std::int32_t> concat(std::vector<std::int32_t> a,
                                        const std::vector<std::int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// One segment of a plan, reassembled from its chunks.
struct Segment {
  std::int32_t row = 0, begin = 0, end = 0;
  std::vector<std::int32_t> queries;
  std::int32_t num_chunks = 0;
};

inline std::vector<Segment> segments_of(const ra::RadixPlan& plan) {
  std::vector<Segment> out(static_cast<std::size_t>(plan.num_segments));
  std::vector<bool> seen(out.size(), false);
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const auto ci = static_cast<std::size_t>(c);
    Segment& s = out[static_cast<std::size_t>(plan.chunk_segment[ci])];
    std::vector<std::int32_t> qs(plan.chunk_queries.begin() + plan.chunk_query_indptr[ci],
                                 plan.chunk_queries.begin() + plan.chunk_query_indptr[ci + 1]);
    if (!seen[static_cast<std::size_t>(plan.chunk_segment[ci])]) {
      seen[static_cast<std::size_t>(plan.chunk_segment[ci])] = true;
      s.row = plan.chunk_row[ci];
      s.begin = plan.chunk_token_begin[ci];
      s.queries = qs;
    } else {
      EXPECT_EQ(s.end, plan.chunk_token_begin[ci]) << "chunks of a segment must be consecutive";
      EXPECT_EQ(s.row, plan.chunk_row[ci]);
      EXPECT_EQ(s.queries, qs) << "every chunk of a segment serves the same queries";
    }
    s.end = plan.chunk_token_end[ci];
    ++s.num_chunks;
  }
  return out;
}

inline std::vector<Segment> shared_segments(const ra::RadixPlan& plan) {
  std::vector<Segment> out;
  for (auto& s : segments_of(plan)) {
    if (s.queries.size() >= 2) out.push_back(s);
  }
  return out;
}

// Everything a kernel relies on, checked without the library's validators:
// (1) each query's partial ranges tile [0, context) in token order, no partials for context 0;
// (2) each chunk's row holds the same block ids as each served query's row over its range;
// (3) a chunk serving >= 2 queries covers only full blocks of each of them;
// plus the library's own validate_radix_plan / check_plan_for_batch.
inline void expect_plan_invariants(const ra::RadixPlan& plan, Batch& batch) {
  const ra::BlockTableView view = batch.view();
  ASSERT_NO_THROW(ra::validate_radix_plan(plan, batch.context_lens));
  ASSERT_NO_THROW(ra::check_plan_for_batch(plan, view, batch.block_size));
  ASSERT_EQ(plan.num_queries, view.num_seqs);
  ASSERT_EQ(plan.batch_fingerprint, ra::fingerprint_batch(view, batch.block_size));
  std::vector<std::int32_t> partial_chunk(plan.chunk_queries.size());
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    for (auto p = plan.chunk_query_indptr[c]; p < plan.chunk_query_indptr[c + 1]; ++p) {
      partial_chunk[static_cast<std::size_t>(p)] = c;
    }
  }
  for (std::int32_t q = 0; q < view.num_seqs; ++q) {
    std::int32_t at = 0;
    for (auto i = plan.query_partial_indptr[q]; i < plan.query_partial_indptr[q + 1]; ++i) {
      const auto c = static_cast<std::size_t>(partial_chunk[static_cast<std::size_t>(
          plan.query_partials[static_cast<std::size_t>(i)])]);
      ASSERT_EQ(plan.chunk_token_begin[c], at) << "query " << q << " partials not in token order";
      at = plan.chunk_token_end[c];
    }
    ASSERT_EQ(at, batch.context_lens[static_cast<std::size_t>(q)]) << "query " << q;
  }
  const std::int32_t bs = batch.block_size;
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const auto& chunk_row = batch.rows[static_cast<std::size_t>(plan.chunk_row[c])];
    const std::int32_t begin = plan.chunk_token_begin[c], end = plan.chunk_token_end[c];
    const auto nq = plan.chunk_query_indptr[c + 1] - plan.chunk_query_indptr[c];
    for (auto p = plan.chunk_query_indptr[c]; p < plan.chunk_query_indptr[c + 1]; ++p) {
      const std::int32_t q = plan.chunk_queries[static_cast<std::size_t>(p)];
      const auto& row = batch.rows[static_cast<std::size_t>(q)];
      for (std::int32_t b = begin / bs; b <= (end - 1) / bs; ++b) {
        ASSERT_EQ(row[static_cast<std::size_t>(b)], chunk_row[static_cast<std::size_t>(b)])
            << "chunk " << c << " query " << q << " block " << b;
      }
      if (nq >= 2) {
        ASSERT_LE(end, batch.context_lens[static_cast<std::size_t>(q)] / bs * bs)
            << "a shared chunk must cover full blocks only";
      }
    }
  }
}

}  // namespace planner_test
