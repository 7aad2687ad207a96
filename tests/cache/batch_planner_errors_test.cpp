// BatchPlanner bad input (typed errors naming the value, nothing changed), the batch
// fingerprint, and check_plan_for_batch's rejection of stale or mismatched plans.

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "cache/planner_test_support.hpp"
#include "radix_attention/cache/batch_planner.hpp"

namespace ra = radix_attention;
using planner_test::Batch;
using planner_test::iota_blocks;

namespace {

template <class Exception, class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning " << needle;
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

Batch two_rows() {
  Batch b;
  b.add({0, 1, 2}, 40);
  b.add({0, 1, 5}, 33);
  return b;
}

TEST(BatchPlannerErrors, InvalidOptions) {
  Batch b = two_rows();
  const ra::BlockTableView v = b.view();
  const std::vector<std::pair<std::function<void(ra::PlannerOptions&)>, const char*>> cases = {
      {[](ra::PlannerOptions& o) { o.num_kv_heads = 0; }, "options.num_kv_heads = 0"},
      {[](ra::PlannerOptions& o) { o.num_q_heads = 12; }, "options.num_q_heads = 12"},
      {[](ra::PlannerOptions& o) { o.num_q_heads = 0; }, "options.num_q_heads = 0"},
      {[](ra::PlannerOptions& o) { o.head_dim = 0; }, "options.head_dim = 0"},
      {[](ra::PlannerOptions& o) { o.kv_element_bytes = 0; }, "options.kv_element_bytes = 0"},
      {[](ra::PlannerOptions& o) { o.num_sms = 0; }, "options.num_sms = 0"},
      {[](ra::PlannerOptions& o) { o.ctas_per_sm = -1; }, "options.ctas_per_sm = -1"},
      {[](ra::PlannerOptions& o) { o.min_chunk_tokens = 0; }, "options.min_chunk_tokens = 0"},
      {[](ra::PlannerOptions& o) { o.chunk_alignment_tokens = 0; },
       "options.chunk_alignment_tokens = 0"},
      {[](ra::PlannerOptions& o) { o.max_chunk_tokens = 128; }, "options.max_chunk_tokens = 128"},
      {[](ra::PlannerOptions& o) { o.max_chunk_tokens = 300; }, "options.max_chunk_tokens = 300"},
      {[](ra::PlannerOptions& o) { o.rows_per_tile = 0; }, "options.rows_per_tile = 0"},
      {[](ra::PlannerOptions& o) { o.segment_overhead_bytes = -1; },
       "options.segment_overhead_bytes = -1"},
      {[](ra::PlannerOptions& o) { o.merge_launch_bytes = -1; }, "options.merge_launch_bytes = -1"},
  };
  for (const auto& [mutate, needle] : cases) {
    ra::PlannerOptions o;
    mutate(o);
    expect_error<ra::InvalidArgument>([&] { ra::plan(v, 16, o); }, needle);
  }
  ra::PlannerOptions ok;
  ok.max_chunk_tokens = 512;
  EXPECT_NO_THROW(ra::plan(v, 16, ok));
}

TEST(BatchPlannerErrors, InconsistentBatchNothingChanged) {
  Batch b = two_rows();
  ra::BlockTableView v = b.view();
  const std::vector<std::int32_t> table_before = b.table;
  const std::vector<std::int32_t> lens_before = b.context_lens;
  ra::PlanStats stats;
  stats.num_trie_nodes = 12345;  // a failed call must not touch it
  const auto fails = [&](ra::BlockTableView bad, std::int32_t bs, const std::string& needle) {
    expect_error<ra::InvalidArgument>([&] { ra::plan(bad, bs, {}, &stats); }, needle);
    expect_error<ra::InvalidArgument>([&] { ra::fingerprint_batch(bad, bs); }, needle);
  };
  fails(v, 0, "block_size = 0");
  ra::BlockTableView bad = v;
  bad.num_seqs = -1;
  fails(bad, 16, "tables.num_seqs = -1");
  bad = v;
  bad.max_blocks_per_seq = -2;
  fails(bad, 16, "tables.max_blocks_per_seq = -2");
  bad = v;
  bad.row_stride = 2;  // < max_blocks_per_seq = 3
  fails(bad, 16, "tables.row_stride = 2");
  bad = v;
  bad.max_context_len = 49;
  fails(bad, 16, "tables.max_context_len = 49");
  bad = v;
  bad.context_lens = nullptr;
  fails(bad, 16, "tables.context_lens");
  bad = v;
  bad.block_tables = nullptr;
  fails(bad, 16, "tables.block_tables");
  bad = v;
  bad.max_context_len = 39;  // row 0 has 40
  fails(bad, 16, "context_lens[0] = 40: must be in [0, max_context_len = 39]");
  b.context_lens[1] = -1;
  fails(v, 16, "context_lens[1] = -1: must be in [0, max_blocks_per_seq * block_size = 48]");
  b.context_lens[1] = 49;  // 3 blocks x 16 = 48
  fails(v, 16, "context_lens[1] = 49: must be in [0, max_blocks_per_seq * block_size = 48]");
  b.context_lens[1] = 33;
  b.table[4] = -1;  // row 1, block 1: used
  fails(v, 16, "block_tables[1][1] = -1");
  b.table[4] = 1;
  b.context_lens[1] = 32;
  b.table[5] = -1;  // row 1, block 2: unused at context 32, so padding is fine there
  EXPECT_NO_THROW(ra::plan(v, 16));
  b.table = table_before;
  b.context_lens = lens_before;
  EXPECT_EQ(stats.num_trie_nodes, 12345);
}

TEST(BatchPlannerErrors, BlockTablesArraySizes) {
  ra::BlockTables t;
  t.num_seqs = 2;
  t.max_blocks_per_seq = 3;
  t.block_tables = {0, 1, 2, 0, 1, 5};
  t.context_lens = {40, 33};
  EXPECT_NO_THROW(ra::plan(t, 16));
  ra::BlockTables bad = t;
  bad.context_lens.pop_back();
  expect_error<ra::InvalidArgument>([&] { ra::plan(bad, 16); }, "tables.context_lens.size() = 1");
  bad = t;
  bad.block_tables.push_back(0);
  expect_error<ra::InvalidArgument>([&] { ra::plan(bad, 16); }, "tables.block_tables.size() = 7");
  bad = t;
  bad.num_seqs = -1;
  expect_error<ra::InvalidArgument>([&] { ra::plan(bad, 16); }, "tables.num_seqs = -1");
  expect_error<ra::InvalidArgument>([&] { ra::plan(t, 0); }, "block_size = 0");
}

TEST(BatchPlannerErrors, UnknownSequence) {
  ra::BlockAllocator alloc(16);
  ra::SequenceManager sm(alloc, 16);
  const ra::SequenceId s = sm.create(20);
  expect_error<ra::InvalidArgument>([&] { ra::plan(sm, {s, s + 7}); }, "seq = ");
  EXPECT_NO_THROW(ra::plan(sm, {s, s}));  // a repeated row is allowed (and shares everything)
}

TEST(BatchFingerprint, DetectsEveryChangeIgnoresPaddingAndStride) {
  Batch b = two_rows();
  const std::uint64_t base = ra::fingerprint_batch(b.view(), b.block_size);
  EXPECT_EQ(ra::fingerprint_batch(b.view(), b.block_size), base);
  b.context_lens[0] = 39;
  EXPECT_NE(ra::fingerprint_batch(b.view(), b.block_size), base);
  b.context_lens[0] = 40;
  b.rows[1][2] = 6;
  EXPECT_NE(ra::fingerprint_batch(b.view(), b.block_size), base);
  b.rows[1][2] = 5;
  b.block_size = 32;
  b.context_lens = {40, 33};
  EXPECT_NE(ra::fingerprint_batch(b.view(), b.block_size), base);
  b.block_size = 16;
  // Wider stride and padding entries do not change the batch.
  b.rows[0].push_back(99);
  EXPECT_EQ(ra::fingerprint_batch(b.view(), b.block_size), base);
  b.add({}, 0);
  EXPECT_NE(ra::fingerprint_batch(b.view(), b.block_size), base);
}

TEST(CheckPlanForBatch, RejectsStaleAndMismatchedPlans) {
  Batch b;
  for (std::int32_t q = 0; q < 64; ++q) b.add({0, 1, 2, 3, 100 + q}, 70);
  ra::PlannerOptions o;
  o.merge_launch_bytes = 0;
  const ra::RadixPlan plan = ra::plan(b.view(), b.block_size, o);
  ASSERT_NO_THROW(ra::check_plan_for_batch(plan, b.view(), b.block_size));
  ASSERT_EQ(planner_test::shared_segments(plan).size(), 1u);
  // The batch changes after planning (a token appended): the plan is stale.
  b.context_lens[3] = 71;
  expect_error<ra::StateError>([&] { ra::check_plan_for_batch(plan, b.view(), b.block_size); },
                               "plan.batch_fingerprint");
  b.context_lens[3] = 70;
  // A plan claiming this batch whose shared chunk serves a query with other blocks.
  b.rows[5][1] = 77;
  ra::RadixPlan forged = plan;
  forged.batch_fingerprint = ra::fingerprint_batch(b.view(), b.block_size);
  expect_error<ra::InvalidArgument>(
      [&] { ra::check_plan_for_batch(forged, b.view(), b.block_size); },
      "serves query 5 whose block 1 is 77");
  // And an invalid plan with the right fingerprint.
  b.rows[5][1] = 1;
  forged = plan;
  forged.chunk_token_end[0] -= 1;
  expect_error<ra::InvalidArgument>(
      [&] { ra::check_plan_for_batch(forged, b.view(), b.block_size); }, "plan chunk range begin");
}

}  // namespace
