// Batch-invariant plans (PlannerOptions::deterministic): a query's chunk ranges and their merge
// order depend only on its own context length, whatever else is in the batch and whether its
// prefix is shared; plans stay valid (shared chunks read blocks every sharer holds).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "cache/planner_test_support.hpp"
#include "radix_attention/cache/batch_planner.hpp"

namespace ra = radix_attention;
using planner_test::Batch;
using planner_test::concat;
using planner_test::iota_blocks;

namespace {

using Ranges = std::vector<std::pair<std::int32_t, std::int32_t>>;

// Query q's chunk ranges in merge order.
Ranges ranges_of(const ra::RadixPlan& plan, std::int32_t q) {
  std::vector<std::int32_t> partial_chunk(plan.chunk_queries.size());
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    for (auto p = plan.chunk_query_indptr[c]; p < plan.chunk_query_indptr[c + 1]; ++p) {
      partial_chunk[static_cast<std::size_t>(p)] = c;
    }
  }
  Ranges out;
  for (auto i = plan.query_partial_indptr[q]; i < plan.query_partial_indptr[q + 1]; ++i) {
    const auto c = static_cast<std::size_t>(
        partial_chunk[static_cast<std::size_t>(plan.query_partials[static_cast<std::size_t>(i)])]);
    out.emplace_back(plan.chunk_token_begin[c], plan.chunk_token_end[c]);
  }
  return out;
}

// [0, len) cut at multiples of chunk.
Ranges absolute_chunks(std::int32_t len, std::int32_t chunk) {
  Ranges out;
  for (std::int32_t b = 0; b < len; b += chunk) out.emplace_back(b, std::min(len, b + chunk));
  return out;
}

ra::PlannerOptions invariant_options(std::int32_t chunk = 512) {
  ra::PlannerOptions o;
  o.deterministic = true;
  o.deterministic_chunk_tokens = chunk;
  return o;
}

// `n` queries sharing `shared_blocks` blocks, each with `own` tokens of its own after them.
Batch shared_batch(std::int32_t n, std::int32_t bs, std::int32_t shared_blocks, std::int32_t own) {
  Batch b;
  b.block_size = bs;
  const auto prefix = iota_blocks(0, shared_blocks);
  const std::int32_t own_blocks = (own + bs - 1) / bs;
  for (std::int32_t q = 0; q < n; ++q) {
    b.add(concat(prefix, iota_blocks(shared_blocks + q * own_blocks, own_blocks)),
          shared_blocks * bs + own);
  }
  return b;
}

}  // namespace

TEST(BatchPlannerDeterministic, ChunksAreAbsoluteWhateverTheSharing) {
  // Shared prefixes on and off chunk boundaries (2048 = 4 chunks; 1000 and 16 * 37 = 592 not),
  // block sizes 1 and 16: every query gets exactly [0, 512), [512, 1024), ..., in token order.
  struct Case {
    std::int32_t bs, shared_blocks, own;
  };
  for (const Case c : {Case{16, 128, 64}, Case{16, 37, 100}, Case{1, 1000, 64}, Case{1, 2048, 1},
                       Case{16, 64, 0}, Case{128, 9, 130}}) {
    SCOPED_TRACE(testing::Message()
                 << "block " << c.bs << " shared blocks " << c.shared_blocks << " own " << c.own);
    Batch batch = shared_batch(64, c.bs, c.shared_blocks, c.own);
    ra::PlanStats stats;
    const ra::RadixPlan plan = ra::plan(batch.view(), c.bs, invariant_options(), &stats);
    planner_test::expect_plan_invariants(plan, batch);
    EXPECT_EQ(plan.rows_per_item, ra::kRadixBatchInvariantRows);
    const std::int32_t len = batch.context_lens[0];
    if (c.shared_blocks * c.bs >= 512) EXPECT_GE(stats.num_shared_segments, 1);
    for (std::int32_t q = 0; q < 64; ++q) {
      ASSERT_EQ(ranges_of(plan, q), absolute_chunks(len, 512)) << "query " << q;
    }
    // The same query alone, and with sharing disabled: the same chunks.
    Batch alone = shared_batch(1, c.bs, c.shared_blocks, c.own);
    const ra::RadixPlan single = ra::plan(alone.view(), c.bs, invariant_options());
    EXPECT_EQ(ranges_of(single, 0), absolute_chunks(len, 512));
    ra::PlannerOptions unshared = invariant_options();
    unshared.enable_sharing = false;
    const ra::RadixPlan no_sharing = ra::plan(batch.view(), c.bs, unshared);
    EXPECT_EQ(ranges_of(no_sharing, 5), absolute_chunks(len, 512));
  }
}

TEST(BatchPlannerDeterministic, NestedSharingAndIdenticalRequests) {
  // Two levels (1000 tokens shared by all, then 700 more by each half) and requests that are
  // identical to the last token (context entirely in shared full blocks, 1600 = 3 x 512 + 64).
  const std::int32_t bs = 16;
  Batch b;
  b.block_size = bs;
  const auto top = iota_blocks(0, 63);  // 1008 tokens
  const auto left = iota_blocks(100, 44), right = iota_blocks(200, 44);
  for (std::int32_t q = 0; q < 16; ++q) {
    b.add(concat(concat(top, q < 8 ? left : right), iota_blocks(1000 + 4 * q, 4)),
          (63 + 44) * bs + 50);
  }
  const auto same = iota_blocks(3000, 100);
  for (std::int32_t q = 0; q < 8; ++q) b.add(same, 1600);
  ra::PlanStats stats;
  const ra::RadixPlan plan = ra::plan(b.view(), bs, invariant_options(), &stats);
  planner_test::expect_plan_invariants(plan, b);
  EXPECT_GE(stats.num_shared_segments, 3);
  for (std::int32_t q = 0; q < plan.num_queries; ++q) {
    ASSERT_EQ(ranges_of(plan, q), absolute_chunks(b.context_lens[static_cast<std::size_t>(q)], 512))
        << "query " << q;
  }
}

TEST(BatchPlannerDeterministic, StatefulPlannerMatchesFromScratchEveryStep) {
  // Decode steps (one token per query per step, queries joining) through BatchPlanner: each
  // plan equals the stateless plan and keeps the absolute chunks.
  const std::int32_t bs = 16;
  ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{132, 0},
                           invariant_options(256));
  Batch b = shared_batch(24, bs, 40, 30);
  std::vector<std::int64_t> keys;
  for (std::int32_t q = 0; q < 24; ++q) keys.push_back(q);
  for (int step = 0; step < 40; ++step) {
    SCOPED_TRACE(step);
    for (std::size_t q = 0; q < b.rows.size(); ++q) {
      const std::int32_t len = ++b.context_lens[q];
      if ((len + bs - 1) / bs > static_cast<std::int32_t>(b.rows[q].size())) {
        b.rows[q].push_back(5000 + step * 64 + static_cast<std::int32_t>(q));
      }
    }
    const ra::RadixPlan got = planner.plan(b.view(), bs, keys.data());
    const ra::RadixPlan want = ra::plan(b.view(), bs, planner.options());
    ASSERT_EQ(got.chunk_token_begin, want.chunk_token_begin);
    ASSERT_EQ(got.chunk_token_end, want.chunk_token_end);
    ASSERT_EQ(got.chunk_queries, want.chunk_queries);
    ASSERT_EQ(got.query_partials, want.query_partials);
    ASSERT_EQ(got.rows_per_item, want.rows_per_item);
    planner_test::expect_plan_invariants(got, b);
    for (std::int32_t q = 0; q < got.num_queries; ++q) {
      ASSERT_EQ(ranges_of(got, q),
                absolute_chunks(b.context_lens[static_cast<std::size_t>(q)], 256));
    }
  }
}

TEST(BatchPlannerDeterministic, RandomBatchesKeepTheirQueriesChunks) {
  // Random batches over a few prefixes: every query's chunks equal those of the query alone.
  std::mt19937 rng(7);
  for (int trial = 0; trial < 60; ++trial) {
    SCOPED_TRACE(trial);
    const std::int32_t bs = std::vector<std::int32_t>{1, 3, 16, 64}[trial % 4];
    Batch b;
    b.block_size = bs;
    std::vector<std::vector<std::int32_t>> prefixes;
    for (int p = 0; p < 3; ++p) {
      prefixes.push_back(
          iota_blocks(10000 * (p + 1), 1 + static_cast<std::int32_t>(rng() % (3000 / bs + 1))));
    }
    const auto n = 1 + static_cast<std::int32_t>(rng() % 20);
    for (std::int32_t q = 0; q < n; ++q) {
      const auto& prefix = prefixes[rng() % 3];
      const auto own = static_cast<std::int32_t>(rng() % 700);
      const std::int32_t own_blocks = (own + bs - 1) / bs;
      const auto prefix_len = static_cast<std::int32_t>(prefix.size()) * bs;
      b.add(concat(prefix, iota_blocks(50000 + q * 1000, own_blocks)), prefix_len + own);
    }
    const ra::RadixPlan plan = ra::plan(b.view(), bs, invariant_options());
    planner_test::expect_plan_invariants(plan, b);
    for (std::int32_t q = 0; q < n; ++q) {
      ASSERT_EQ(ranges_of(plan, q),
                absolute_chunks(b.context_lens[static_cast<std::size_t>(q)], 512));
    }
  }
}

TEST(BatchPlannerDeterministic, ChunkLengthIsChecked) {
  Batch b = shared_batch(2, 16, 4, 3);
  for (const std::int32_t bad : {0, 100, -64}) {
    EXPECT_THROW(ra::plan(b.view(), 16, invariant_options(bad)), ra::InvalidArgument) << bad;
  }
  EXPECT_NO_THROW(ra::plan(b.view(), 16, invariant_options(64)));
  ra::RadixPlan plan = ra::plan(b.view(), 16, invariant_options());
  plan.rows_per_item = 65;
  EXPECT_THROW(ra::validate_radix_plan(plan, b.context_lens), ra::InvalidArgument);
}
