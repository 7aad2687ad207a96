// BatchPlanner on hand-built batches: sharing shapes (one prefix, nested, none, identical,
// divergence inside a block), context 0/1, block sizes 1 and 16, chunking, the cost model's
// decisions, and bad input. Randomized batches: batch_planner_random_test.cpp.

#include "radix_attention/cache/batch_planner.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "cache/planner_test_support.hpp"

namespace ra = radix_attention;
using planner_test::Batch;
using planner_test::concat;
using planner_test::expect_plan_invariants;
using planner_test::iota_blocks;
using planner_test::segments_of;
using planner_test::shared_segments;

namespace {

// Options under which segments are never split: one chunk per segment.
ra::PlannerOptions no_split() {
  ra::PlannerOptions o;
  o.num_sms = 1;
  o.ctas_per_sm = 1;
  return o;
}

// n queries sharing `shared` blocks, each with `priv` private blocks and `tail` extra tokens.
Batch shared_prefix_batch(std::int32_t n, std::int32_t bs, std::int32_t shared, std::int32_t priv,
                          std::int32_t tail) {
  Batch b;
  b.block_size = bs;
  std::int32_t next = shared;
  for (std::int32_t q = 0; q < n; ++q) {
    const std::int32_t own = priv + (tail > 0 ? 1 : 0);
    b.add(concat(iota_blocks(0, shared), iota_blocks(next, own)), (shared + priv) * bs + tail);
    next += own;
  }
  return b;
}

TEST(BatchPlanner, OneSharedPrefix) {
  Batch b = shared_prefix_batch(64, 16, 256, 8, 0);  // 64 x (4096 shared + 128 private)
  ra::PlanStats stats;
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, {}, &stats);
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared[0].begin, 0);
  EXPECT_EQ(shared[0].end, 4096);
  EXPECT_EQ(shared[0].queries.size(), 64u);
  EXPECT_EQ(shared[0].row, 0);
  EXPECT_EQ(stats.num_shared_segments, 1);
  EXPECT_EQ(stats.num_private_segments, 64);
  EXPECT_EQ(plan.num_segments, 65);
  EXPECT_LT(stats.modelled_bytes * 10, stats.modelled_bytes_unshared);
  for (const auto& s : segments_of(plan)) {
    if (s.queries.size() == 1) {
      EXPECT_EQ(s.begin, 4096);
      EXPECT_EQ(s.end, 4224);
    }
  }
}

TEST(BatchPlanner, NestedSharingGlobalGroupPrivate) {
  // 4 groups x 16 queries: 1024 tokens shared by all, 2048 per group, 100 private tokens each.
  Batch b;
  std::int32_t next = 64;
  for (std::int32_t g = 0; g < 4; ++g) {
    const auto group = iota_blocks(1000 + g * 128, 128);
    for (std::int32_t i = 0; i < 16; ++i) {
      b.add(concat(concat(iota_blocks(0, 64), group), iota_blocks(next, 7)), (64 + 128) * 16 + 100);
      next += 7;
    }
  }
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, no_split());
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 5u);
  EXPECT_EQ(shared[0].begin, 0);
  EXPECT_EQ(shared[0].end, 1024);
  EXPECT_EQ(shared[0].queries.size(), 64u);
  for (std::size_t g = 0; g < 4; ++g) {
    EXPECT_EQ(shared[g + 1].begin, 1024);
    EXPECT_EQ(shared[g + 1].end, 3072);
    ASSERT_EQ(shared[g + 1].queries.size(), 16u);
    EXPECT_EQ(shared[g + 1].queries.front(), static_cast<std::int32_t>(g * 16));
  }
  for (std::int32_t q = 0; q < 64; ++q) {  // global + group + private, one chunk each
    EXPECT_EQ(plan.query_partial_indptr[q + 1] - plan.query_partial_indptr[q], 3);
  }
}

TEST(BatchPlanner, NoSharingIsPlainPagedDecode) {
  Batch b;
  for (std::int32_t q = 0; q < 8; ++q) b.add(iota_blocks(q * 100, 64), 64 * 16 - q);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, no_split());
  expect_plan_invariants(plan, b);
  EXPECT_TRUE(shared_segments(plan).empty());
  EXPECT_EQ(plan.num_segments, 8);
  EXPECT_EQ(plan.num_chunks(), 8);
  for (std::int32_t q = 0; q < 8; ++q) EXPECT_EQ(plan.chunk_row[q], q);
}

TEST(BatchPlanner, OneRequestIsSplitToFillTheGpu) {
  Batch b;
  b.add(iota_blocks(5, 128), 2048);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size);
  expect_plan_invariants(plan, b);
  // 2048 tokens x 8 kv heads over 132 SMs is below the 256-token minimum: 8 chunks of 256.
  ASSERT_EQ(plan.num_chunks(), 8);
  for (std::int32_t c = 0; c < 8; ++c) {
    EXPECT_EQ(plan.chunk_token_begin[c], c * 256);
    EXPECT_EQ(plan.chunk_token_end[c], (c + 1) * 256);
    EXPECT_EQ(plan.chunk_segment[c], 0);
  }
}

TEST(BatchPlanner, IdenticalRequestsShareAllFullBlocks) {
  // Same full blocks; each has its own partial last block (as the sequence manager guarantees).
  Batch b = shared_prefix_batch(32, 16, 256, 0, 7);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, no_split());
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared[0].end, 4096);
  // Rows identical to the last token (a raw input with block-aligned contexts): one segment,
  // one partial per query, nothing to merge.
  Batch same;
  for (int q = 0; q < 32; ++q) same.add(iota_blocks(0, 256), 4096);
  const ra::RadixPlan p2 = ra::plan(same.view(), same.block_size, no_split());
  expect_plan_invariants(p2, same);
  EXPECT_EQ(p2.num_segments, 1);
  EXPECT_EQ(p2.num_partials(), 32);
}

TEST(BatchPlanner, DivergenceInsideABlockSharesOnlyFullIdenticalBlocks) {
  // 64 requests share 40 tokens of prompt at block 16: blocks 0-1 are shared, block 2 was copied
  // on write (different ids), so sharing ends at token 32.
  Batch b;
  for (std::int32_t q = 0; q < 64; ++q) {
    b.add({7, 9, 100 + q, 200 + q}, 16 * 3 + 5);
  }
  ra::PlannerOptions o = no_split();
  o.merge_launch_bytes = 0;  // only the block granularity is under test here
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o);
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared[0].begin, 0);
  EXPECT_EQ(shared[0].end, 32);
}

TEST(BatchPlanner, ContextZeroAndOne) {
  Batch b;
  b.add({}, 0);
  b.add({3}, 1);
  b.add({}, 0);
  b.add({4, 5}, 17);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size);
  expect_plan_invariants(plan, b);
  EXPECT_EQ(plan.query_partial_indptr, (std::vector<std::int32_t>{0, 0, 1, 1, 2}));
  Batch empty;
  empty.add({}, 0);
  const ra::RadixPlan p2 = ra::plan(empty.view(), empty.block_size);
  expect_plan_invariants(p2, empty);
  EXPECT_EQ(p2.num_chunks(), 0);
  EXPECT_EQ(p2.num_segments, 0);
  const ra::RadixPlan p3 = ra::plan(ra::BlockTableView{nullptr, nullptr, 0, 0, 0, -1}, 16);
  EXPECT_EQ(p3.num_queries, 0);
  EXPECT_EQ(p3.query_partial_indptr, std::vector<std::int32_t>{0});
}

TEST(BatchPlanner, BlockSizeOne) {
  Batch b = shared_prefix_batch(64, 1, 4096, 128, 0);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, no_split());
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared[0].end, 4096);
  EXPECT_EQ(plan.num_segments, 65);
}

// The chunk target spreads the work W over one wave of the radix kernel: num_sms x ctas_per_sm
// CTAs, ctas_per_sm = 0 meaning 2 up to head_dim 128 and 1 above.
TEST(BatchPlanner, ChunkTargetIsOneWaveOfTheKernel) {
  Batch b;
  b.add(iota_blocks(0, 1024), 16384);  // one query: W = 16384 tokens x 8 kv heads x 1 tile
  auto target = [&b](std::int32_t head_dim, std::int32_t ctas_per_sm) {
    ra::PlannerOptions o;  // 132 SMs, 32 q / 8 kv heads
    o.head_dim = head_dim;
    o.ctas_per_sm = ctas_per_sm;
    ra::PlanStats stats;
    const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o, &stats);
    expect_plan_invariants(plan, b);
    return stats.chunk_target_tokens;
  };
  EXPECT_EQ(target(128, 0), (16384 * 8 + 263) / 264);  // 497
  EXPECT_EQ(target(256, 0), (16384 * 8 + 131) / 132);  // 993
  EXPECT_EQ(target(128, 1), (16384 * 8 + 131) / 132);
  EXPECT_EQ(target(128, 4), 256);  // 125 tokens, raised to min_chunk_tokens
}

TEST(BatchPlanner, ChunkingRespectsMinMaxAndAlignment) {
  Batch b;
  b.add(iota_blocks(0, 1024), 16384);
  b.add(iota_blocks(2000, 19), 300);  // too short to split into two >= 256-token chunks
  ra::PlannerOptions o;
  o.num_sms = 132;
  ra::PlanStats stats;
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o, &stats);
  expect_plan_invariants(plan, b);
  std::int32_t chunks_of_short = 0;
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const std::int32_t len = plan.chunk_token_end[c] - plan.chunk_token_begin[c];
    if (plan.chunk_row[c] == 1) {
      ++chunks_of_short;
      continue;
    }
    EXPECT_GE(len, o.min_chunk_tokens);
    EXPECT_EQ(plan.chunk_token_begin[c] % 64, 0);
  }
  EXPECT_EQ(chunks_of_short, 1);
  EXPECT_GT(plan.num_chunks(), 8);
  o.max_chunk_tokens = 1024;
  o.num_sms = 1;  // the target alone would keep the segment whole; the cap splits it
  o.ctas_per_sm = 1;
  const ra::RadixPlan capped = ra::plan(b.view(), b.block_size, o);
  expect_plan_invariants(capped, b);
  for (std::int32_t c = 0; c < capped.num_chunks(); ++c) {
    EXPECT_LE(capped.chunk_token_end[c] - capped.chunk_token_begin[c], 1024);
  }
  EXPECT_EQ(capped.num_chunks(), 16 + 1);
}

TEST(BatchPlanner, ContextsNearTheInt32LimitDoNotOverflow) {
  // Block size 2^20: contexts up to INT32_MAX tokens in 2048 blocks; chunk ends near the limit.
  Batch b;
  b.block_size = 1 << 20;
  b.add(iota_blocks(0, 2048), std::numeric_limits<std::int32_t>::max());
  b.add(concat(iota_blocks(0, 1024), iota_blocks(5000, 1024)),
        std::numeric_limits<std::int32_t>::max() - 5);
  ra::PlannerOptions o;
  o.chunk_alignment_tokens = 1 << 30;
  ra::PlanStats stats;
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o, &stats);
  expect_plan_invariants(plan, b);
  EXPECT_EQ(shared_segments(plan).size(), 1u);
  o.max_chunk_tokens = 1 << 30;
  o.chunk_alignment_tokens = 1 << 29;
  expect_plan_invariants(ra::plan(b.view(), b.block_size, o), b);
}

TEST(BatchPlanner, SharedSegmentIsChunkedWithAllItsQueries) {
  Batch b = shared_prefix_batch(64, 16, 256, 8, 0);
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size);
  expect_plan_invariants(plan, b);
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_GT(shared[0].num_chunks, 1);  // 4096 x 8 heads x 4 row tiles does not fit 132 SMs' share
}

TEST(BatchPlanner, CostModelDecisions) {
  // Two queries sharing one 16-token block: 64 KiB saved < two more partials + merge step.
  Batch small;
  small.add({1, 10, 11, 12}, 64);
  small.add({1, 20, 21, 22}, 64);
  EXPECT_TRUE(shared_segments(ra::plan(small.view(), small.block_size, no_split())).empty());
  // ... but it is shared once partials, segments and merges are free.
  ra::PlannerOptions free_merge = no_split();
  free_merge.segment_overhead_bytes = 0;
  free_merge.merge_launch_bytes = 0;
  free_merge.num_q_heads = 8;  // a partial (2 x 8 x 129 x 4 B) is then cheaper than 16 tokens
  const ra::RadixPlan p = ra::plan(small.view(), small.block_size, free_merge);
  expect_plan_invariants(p, small);
  EXPECT_EQ(shared_segments(p).size(), 1u);
  // 64 queries sharing 4096 tokens are shared under the defaults; not with sharing disabled.
  Batch big = shared_prefix_batch(64, 16, 256, 1, 3);
  EXPECT_EQ(shared_segments(ra::plan(big.view(), big.block_size)).size(), 1u);
  ra::PlannerOptions off;
  off.enable_sharing = false;
  const ra::RadixPlan none = ra::plan(big.view(), big.block_size, off);
  expect_plan_invariants(none, big);
  EXPECT_TRUE(shared_segments(none).empty());
}

TEST(BatchPlanner, ModelledCostMatchesThePlansSegments) {
  // cost = sum over segments of (tokens x B + queries x P + F) [+ merge if a query merges].
  Batch b = shared_prefix_batch(8, 16, 64, 4, 5);
  ra::PlannerOptions o = no_split();
  ra::PlanStats stats;
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o, &stats);
  const double B = 2.0 * o.num_kv_heads * o.head_dim * o.kv_element_bytes;
  const double P = 2.0 * o.num_q_heads * (o.head_dim + 1) * 4.0;
  double cost = o.merge_launch_bytes;
  for (const auto& s : segments_of(plan)) {
    cost += (s.end - s.begin) * B + s.queries.size() * P + o.segment_overhead_bytes;
  }
  EXPECT_DOUBLE_EQ(stats.modelled_bytes, cost);
  EXPECT_LT(stats.modelled_bytes, stats.modelled_bytes_unshared);
}

TEST(BatchPlanner, SequenceManagerOverloadMatchesBlockTables) {
  ra::BlockAllocator alloc(256);
  ra::SequenceManager sm(alloc, 16);
  const ra::SequenceId parent = sm.create(16 * 20 + 3);
  std::vector<ra::SequenceId> batch{parent};
  for (int i = 0; i < 7; ++i) batch.push_back(sm.fork(parent).child);
  const ra::RadixPlan plan = ra::plan(sm, batch, no_split());
  const ra::BlockTables tables = sm.export_block_tables(batch);
  EXPECT_NO_THROW(ra::check_plan_for_batch(plan, tables, 16));
  const auto shared = shared_segments(plan);
  ASSERT_EQ(shared.size(), 1u);
  EXPECT_EQ(shared[0].end, 320);
  EXPECT_EQ(plan.batch_fingerprint, ra::fingerprint_batch(tables, 16));
}

}  // namespace
