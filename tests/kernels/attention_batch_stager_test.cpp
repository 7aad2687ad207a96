// The host half of AttentionBatch (no GPU): config checks, the staging slot's contents for
// paged / radix / prefill steps (context lengths, qo_indptr, block tables with padding, the
// packed radix plan), padding to a bucket, incremental table rows across a ring of slots,
// the unshared fallback when a sharing plan exceeds max_partials, and maxima violations that
// name the argument and change nothing.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/ops/detail/attention_batch_stager.hpp"
#include "support/random_tokens.hpp"

namespace radix_attention {
namespace {

using detail::AttentionBatchStager;
using test::random_tokens;

AttentionBatchConfig small_config(int bs) {
  AttentionBatchConfig c;
  c.model = ModelShape{8, 2, 64, 2};
  c.block_size = bs;
  c.max_batch_size = 8;
  c.max_blocks_per_seq = 64 / bs + 8;
  c.max_q_tokens = 256;
  c.device = DeviceShape{4, 2};
  c.tuning.min_chunk_tokens = 16;
  c.tuning.chunk_alignment_tokens = 16;
  c.tuning.merge_launch_bytes = 0;  // share whenever it saves bytes
  return c;
}

template <class Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Fixture {
  BlockAllocator allocator{512};
  RadixTree tree;
  SequenceManager manager;
  explicit Fixture(int bs) : tree(allocator, bs), manager(allocator, tree) {}

  /// Caches a random prompt of `prompt_len` tokens, then adds `count` requests, each the
  /// prompt plus `extra(i)` random tokens: they share the prompt's full blocks.
  template <class Extra>
  std::vector<SequenceId> share_prompt(std::mt19937_64& rng, int prompt_len, int count,
                                       Extra extra) {
    const std::vector<TokenId> prompt = random_tokens(rng, prompt_len);
    manager.finish(manager.add(prompt));
    std::vector<SequenceId> seqs;
    for (int i = 0; i < count; ++i) {
      std::vector<TokenId> p = prompt;
      const std::vector<TokenId> more = random_tokens(rng, extra(i));
      p.insert(p.end(), more.begin(), more.end());
      seqs.push_back(manager.add(p));
    }
    return seqs;
  }
};

/// A slot of `st`'s layout with its initial contents.
std::vector<std::int32_t> new_slot(const AttentionBatchStager& st) {
  std::vector<std::int32_t> slot(static_cast<std::size_t>(st.layout().total));
  st.init_slot(slot.data());
  return slot;
}

/// Expects the slot's rows [0, n) to hold `tables` (entries past a row's blocks: padding) and
/// every other row to be all padding.
void expect_slot_tables(const AttentionBatchStager& st, const std::vector<std::int32_t>& slot,
                        const BlockTables& tables) {
  const auto& l = st.layout();
  const int bs = st.config().block_size;
  for (int r = 0; r < st.config().max_batch_size; ++r) {
    const bool used = r < tables.num_seqs;
    const int len = used ? tables.context_lens[static_cast<std::size_t>(r)] : 0;
    EXPECT_EQ(slot[static_cast<std::size_t>(l.lens + r)], len) << "row " << r;
    const int entries = (len + bs - 1) / bs;
    for (int b = 0; b < l.row_stride; ++b) {
      const std::int32_t want =
          b < entries
              ? tables.block_tables[static_cast<std::size_t>(r) *
                                        static_cast<std::size_t>(tables.max_blocks_per_seq) +
                                    static_cast<std::size_t>(b)]
              : kBlockTablePadding;
      const std::int32_t got = slot[static_cast<std::size_t>(l.tables + r * l.row_stride + b)];
      if (got != want) {
        ADD_FAILURE() << "row " << r << " entry " << b << ": " << got << " vs " << want;
        return;
      }
    }
  }
}

/// Expects the slot's plan region to hold the stateless planner's plan of the batch, padded to
/// step.launch.rows queries, validated (pack_radix_plan) and packed for the fixed capacity, and
/// the step's copy to end after its last work item.
void expect_slot_plan(const AttentionBatchStager& st, const std::vector<std::int32_t>& slot,
                      const SequenceManager& manager, const std::vector<SequenceId>& seqs,
                      const AttentionStep& step) {
  const int rows = step.launch.rows;
  RadixPlan expected = plan(manager, seqs, st.plan_options());
  expected.num_queries = rows;
  expected.query_partial_indptr.resize(static_cast<std::size_t>(rows) + 1,
                                       expected.query_partial_indptr.back());
  std::vector<std::int32_t> lens = manager.export_block_tables(seqs).context_lens;
  lens.resize(static_cast<std::size_t>(rows), 0);
  RadixPlanCapacity cap = st.layout().capacity;
  std::vector<std::int32_t> packed;
  const std::int32_t group = st.config().model.num_q_heads / st.config().model.num_kv_heads;
  const RadixPlanSummary summary = detail::pack_radix_plan(expected, lens, group, cap, packed);
  EXPECT_EQ(summary.num_partials, step.plan.num_partials);
  EXPECT_EQ(summary.num_items, step.plan.num_items);
  const std::int64_t words = st.layout().plan_offsets.items +
                             (summary.num_items + summary.num_wide_items) * kRadixItemWords;
  EXPECT_EQ(step.copy_bytes, (st.layout().plan + words) * 4);
  for (std::int64_t w = 0; w < words; ++w) {
    ASSERT_EQ(slot[static_cast<std::size_t>(st.layout().plan + w)],
              packed[static_cast<std::size_t>(w)])
        << "plan word " << w;
  }
}

TEST(AttentionBatchStagerTest, ConfigChecksNameTheField) {
  const auto bad = [](auto edit) {
    AttentionBatchConfig c = small_config(16);
    edit(c);
    return message_of([&] { AttentionBatchStager st(c, 2); });
  };
  EXPECT_NE(bad([](auto& c) { c.block_size = 0; }).find("config.block_size = 0"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.max_batch_size = 0; }).find("config.max_batch_size = 0"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.max_batch_size = 70000; }).find("config.max_batch_size = 70000"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.max_blocks_per_seq = 0; }).find("config.max_blocks_per_seq"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.num_slots = 1; }).find("config.num_slots = 1"), std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.device.num_sms = 0; }).find("config.device.num_sms = 0"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.model.kv_element_bytes = 4; }).find("kv_element_bytes = 4"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.model.num_q_heads = 7; }).find("config.model.num_q_heads = 7"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.max_q_tokens = -1; }).find("config.max_q_tokens = -1"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.max_partials = -2; }).find("config.max_partials = -2"),
            std::string::npos);
  EXPECT_NE(bad([](auto& c) { c.scale = -1.f; }).find("config.scale"), std::string::npos);
  EXPECT_EQ(bad([](auto& c) { c.model.kv_element_bytes = 0; }), "");  // 0 = sizeof(T)
  EXPECT_THROW((AttentionBatchStager{small_config(16), 4}), InvalidArgument);
}

TEST(AttentionBatchStagerTest, DefaultPartialsAndLayout) {
  AttentionBatchConfig c = small_config(16);  // 12 blocks of 16 = 192 tokens, chunks >= 16
  AttentionBatchStager st(c, 2);
  EXPECT_EQ(st.config().max_partials, 8 * (192 / 16 + kDefaultSegmentsPerQuery));
  const auto& l = st.layout();
  EXPECT_EQ(l.plan % 64, 0);
  EXPECT_GE(l.tables, l.qo_indptr + c.max_batch_size + 1);
  EXPECT_GE(l.plan, l.tables + std::int64_t{c.max_batch_size} * c.max_blocks_per_seq);
  EXPECT_EQ(l.capacity.queries, c.max_batch_size);
  EXPECT_EQ(l.capacity.items, st.config().max_partials);  // group 4: one tile per partial
}

TEST(AttentionBatchStagerTest, PagedDecodeSlotFromManagerWithPadding) {
  for (int bs : {1, 16}) {
    SCOPED_TRACE(bs);
    std::mt19937_64 rng(11 + bs);
    Fixture f(bs);
    AttentionBatchStager st(small_config(bs), 2);
    std::vector<std::int32_t> slot = new_slot(st);
    std::vector<SequenceId> seqs;
    for (int i = 0; i < 5; ++i) seqs.push_back(f.manager.add(random_tokens(rng, 3 + 9 * i)));
    const AttentionStep& step = st.stage_decode(f.manager, seqs, AttentionMode::kPagedDecode,
                                                PlanPadding{7}, 0, slot.data());
    EXPECT_EQ(step.launch, (LaunchShape{AttentionMode::kPagedDecode, 7, 1}));
    EXPECT_EQ(step.num_seqs, 5);
    EXPECT_EQ(step.copy_bytes, (st.layout().tables + 7 * st.layout().row_stride) * 4);
    expect_slot_tables(st, slot, f.manager.export_block_tables(seqs));
  }
}

TEST(AttentionBatchStagerTest, TableRowsStayExactAcrossRingSlotsAndBatchChanges) {
  for (int bs : {1, 4, 16}) {
    SCOPED_TRACE(bs);
    std::mt19937_64 rng(5 + bs);
    Fixture f(bs);
    AttentionBatchConfig c = small_config(bs);
    c.num_slots = 3;
    AttentionBatchStager st(c, 2);
    std::vector<std::vector<std::int32_t>> slots(3, new_slot(st));
    std::vector<SequenceId> seqs =
        f.share_prompt(rng, 40, 6, [&](int) { return 1 + static_cast<int>(rng() % 12); });
    for (int step = 0; step < 14; ++step) {
      SCOPED_TRACE(step);
      for (SequenceId s : seqs) f.manager.append_tokens(s, random_tokens(rng, 1));
      if (step % 4 == 1) std::shuffle(seqs.begin(), seqs.end(), rng);
      if (step == 5) {  // a short new sequence takes a long one's row
        f.manager.release(seqs[2]);
        seqs[2] = f.manager.add(random_tokens(rng, 2));
      }
      if (step == 8) {  // the batch shrinks: the last rows go back to padding
        f.manager.release(seqs.back());
        seqs.pop_back();
      }
      if (step == 10) seqs.push_back(f.manager.fork(seqs[0]).child);
      const int s = step % 3;
      const AttentionMode mode =
          step % 2 == 0 ? AttentionMode::kPagedDecode : AttentionMode::kRadixDecode;
      const AttentionStep& staged =
          st.stage_decode(f.manager, seqs, mode, PlanPadding{step % 3 == 0 ? 8 : 0}, s,
                          slots[static_cast<std::size_t>(s)].data());
      if (mode == AttentionMode::kRadixDecode) {
        expect_slot_plan(st, slots[static_cast<std::size_t>(s)], f.manager, seqs, staged);
      }
      expect_slot_tables(st, slots[static_cast<std::size_t>(s)],
                         f.manager.export_block_tables(seqs));
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST(AttentionBatchStagerTest, RadixSlotHoldsThePackedPaddedPlan) {
  std::mt19937_64 rng(3);
  Fixture f(16);
  AttentionBatchStager st(small_config(16), 2);
  std::vector<std::int32_t> slot = new_slot(st);
  const std::vector<SequenceId> seqs = f.share_prompt(rng, 100, 4, [](int i) { return 5 + i; });
  const AttentionStep& step =
      st.stage_decode(f.manager, seqs, AttentionMode::kRadixDecode, PlanPadding{6}, 1, slot.data());
  EXPECT_FALSE(step.radix_fell_back);
  EXPECT_GT(step.stats.num_shared_segments, 0);
  EXPECT_EQ(step.plan.num_queries, 6);

  expect_slot_plan(st, slot, f.manager, seqs, step);
  expect_slot_tables(st, slot, f.manager.export_block_tables(seqs));
}

TEST(AttentionBatchStagerTest, RadixFallsBackToTheUnsharedPlanWhenPartialsRunOut) {
  std::mt19937_64 rng(4);
  Fixture f(16);
  AttentionBatchConfig c = small_config(16);
  c.max_blocks_per_seq = 8;
  // Unshared: one chunk (98 tokens) per query, 4 partials. Shared: the 96-token prompt in
  // chunks for all four plus each private token: more than 4.
  c.max_partials = 4;
  AttentionBatchStager st(c, 2);
  std::vector<std::int32_t> slot = new_slot(st);
  const std::vector<SequenceId> seqs = f.share_prompt(rng, 97, 4, [](int) { return 1; });
  PlanStats shared_stats;
  const RadixPlan shared = plan(f.manager, seqs, st.plan_options(), &shared_stats);
  ASSERT_GT(shared.num_partials(), 4) << "the test needs a sharing plan over max_partials";
  const AttentionStep& step =
      st.stage_decode(f.manager, seqs, AttentionMode::kRadixDecode, {}, 0, slot.data());
  EXPECT_TRUE(step.radix_fell_back);
  EXPECT_EQ(step.plan.num_partials, 4);
  EXPECT_EQ(step.stats.num_shared_segments, 0);
}

TEST(AttentionBatchStagerTest, DefaultPartialsHoldTheUnsharedPlanOfAnyBatch) {
  std::mt19937_64 rng(9);
  for (int bs : {1, 16, 48}) {
    for (int min_chunk : {16, 256}) {
      SCOPED_TRACE(::testing::Message() << "bs " << bs << " min_chunk " << min_chunk);
      AttentionBatchConfig c = small_config(bs);
      c.max_blocks_per_seq = 4096 / bs;
      c.tuning.min_chunk_tokens = min_chunk;
      c.device = DeviceShape{132, 2};
      AttentionBatchStager st(c, 2);
      std::vector<std::int32_t> slot = new_slot(st);
      for (int trial = 0; trial < 4; ++trial) {
        BlockTables t;
        t.num_seqs = 1 + static_cast<int>(rng() % 8);
        t.max_blocks_per_seq = c.max_blocks_per_seq;
        t.block_tables.resize(static_cast<std::size_t>(t.num_seqs) * t.max_blocks_per_seq);
        for (std::size_t i = 0; i < t.block_tables.size(); ++i) {
          t.block_tables[i] = static_cast<std::int32_t>(i);  // nothing shared
        }
        for (int s = 0; s < t.num_seqs; ++s) {
          const int capacity = c.max_blocks_per_seq * bs;
          t.context_lens.push_back(trial % 2 == 0 ? capacity
                                                  : static_cast<int>(rng() % (capacity + 1)));
        }
        const AttentionStep& step =
            st.stage_decode(t.view(), AttentionMode::kRadixDecode, {}, nullptr, 0, slot.data());
        EXPECT_FALSE(step.radix_fell_back);
        EXPECT_LE(step.plan.num_partials, st.config().max_partials);
      }
    }
  }
}

TEST(AttentionBatchStagerTest, PrefillSlotHoldsQoIndptr) {
  std::mt19937_64 rng(6);
  Fixture f(16);
  AttentionBatchStager st(small_config(16), 2);
  std::vector<std::int32_t> slot = new_slot(st);
  std::vector<SequenceId> seqs;
  const std::vector<std::int32_t> q_lens{7, 0, 33, 1};
  for (int q : q_lens) seqs.push_back(f.manager.add(random_tokens(rng, q + 20)));
  const AttentionStep& step =
      st.stage_prefill(f.manager, seqs, q_lens, PlanPadding{6, 40}, 0, slot.data());
  EXPECT_EQ(step.launch, (LaunchShape{AttentionMode::kPrefill, 6, 40}));
  EXPECT_EQ(step.total_q, 41);
  const std::vector<std::int32_t> want{0, 7, 7, 40, 41, 41, 41, 41, 41};
  for (std::size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(slot[static_cast<std::size_t>(st.layout().qo_indptr) + i], want[i]) << i;
  }
  expect_slot_tables(st, slot, f.manager.export_block_tables(seqs));
  // Without padding the grid follows the batch.
  EXPECT_EQ(st.stage_prefill(f.manager, seqs, q_lens, {}, 1, slot.data()).launch,
            (LaunchShape{AttentionMode::kPrefill, 4, 33}));
}

TEST(AttentionBatchStagerTest, HostTablesGiveTheManagersSlot) {
  std::mt19937_64 rng(8);
  Fixture f(4);
  AttentionBatchStager st(small_config(4), 2);
  std::vector<std::int32_t> a = new_slot(st), b = new_slot(st);
  std::vector<SequenceId> seqs;
  for (int i = 0; i < 6; ++i) seqs.push_back(f.manager.add(random_tokens(rng, 1 + 7 * i)));
  const BlockTables tables = f.manager.export_block_tables(seqs);
  const AttentionStep from_manager =
      st.stage_decode(f.manager, seqs, AttentionMode::kRadixDecode, {}, 0, a.data());
  const AttentionStep from_tables =
      st.stage_decode(tables.view(), AttentionMode::kRadixDecode, {}, nullptr, 1, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(from_manager.copy_bytes, from_tables.copy_bytes);
}

TEST(AttentionBatchStagerTest, MaximaViolationsNameTheArgumentAndChangeNothing) {
  std::mt19937_64 rng(10);
  Fixture f(16);
  AttentionBatchStager st(small_config(16), 2);  // 8 rows, 12 blocks = 192 tokens, 256 q rows
  std::vector<std::int32_t> slot = new_slot(st);
  std::vector<SequenceId> seqs;
  for (int i = 0; i < 3; ++i) seqs.push_back(f.manager.add(random_tokens(rng, 30 + i)));
  const AttentionStep& current =
      st.stage_decode(f.manager, seqs, AttentionMode::kRadixDecode, {}, 0, slot.data());
  const AttentionStep good = current;
  const std::vector<std::int32_t> before = slot;

  const auto expect_rejected = [&](auto call, const std::string& needle, bool capacity) {
    SCOPED_TRACE(needle);
    std::string what;
    bool was_capacity = false;
    try {
      call();
    } catch (const CapacityError& e) {
      what = e.what();
      was_capacity = true;
    } catch (const Error& e) {
      what = e.what();
    }
    EXPECT_NE(what.find(needle), std::string::npos) << what;
    EXPECT_EQ(was_capacity, capacity) << what;
    EXPECT_EQ(slot, before);
    // The last staged step is still the good one.
    EXPECT_EQ(current.launch, good.launch);
    EXPECT_EQ(current.num_seqs, good.num_seqs);
    EXPECT_EQ(current.copy_bytes, good.copy_bytes);
    EXPECT_EQ(current.plan.num_partials, good.plan.num_partials);
  };
  std::vector<SequenceId> nine = seqs;
  while (nine.size() < 9) nine.push_back(seqs[0]);
  expect_rejected(
      [&] { st.stage_decode(f.manager, nine, AttentionMode::kPagedDecode, {}, 0, slot.data()); },
      "seqs.size() = 9", true);
  expect_rejected(
      [&] {
        st.stage_decode(f.manager, seqs, AttentionMode::kPagedDecode, PlanPadding{9}, 0,
                        slot.data());
      },
      "padding.rows = 9", true);
  expect_rejected(
      [&] {
        st.stage_decode(f.manager, seqs, AttentionMode::kPagedDecode, PlanPadding{2}, 0,
                        slot.data());
      },
      "padding.rows = 2", false);
  expect_rejected(
      [&] { st.stage_decode(f.manager, seqs, AttentionMode::kPrefill, {}, 0, slot.data()); },
      "mode = prefill", false);
  const SequenceId long_seq = f.manager.add(random_tokens(rng, 193));
  std::vector<SequenceId> with_long = seqs;
  with_long.push_back(long_seq);
  expect_rejected(
      [&] {
        st.stage_decode(f.manager, with_long, AttentionMode::kRadixDecode, {}, 0, slot.data());
      },
      "context_len(seqs)[3] = 193", true);
  expect_rejected(
      [&] {
        st.stage_decode(f.manager, {seqs[0], 12345}, AttentionMode::kPagedDecode, {}, 0,
                        slot.data());
      },
      "12345", false);
  expect_rejected(
      [&] {
        st.stage_prefill(f.manager, seqs, {1, 2}, {}, 0, slot.data());
      },
      "q_lens.size() = 2", false);
  expect_rejected(
      [&] {
        st.stage_prefill(f.manager, seqs, {1, 32, 40}, {}, 0, slot.data());
      },
      "q_lens[1] = 32", false);
  expect_rejected(
      [&] {
        st.stage_prefill(f.manager, seqs, {1, -1, 4}, {}, 0, slot.data());
      },
      "q_lens[1] = -1", false);
  expect_rejected(
      [&] {
        st.stage_prefill(f.manager, seqs, {1, 2, 3}, PlanPadding{0, 2}, 0, slot.data());
      },
      "padding.max_q_len = 2", false);
  expect_rejected(
      [&] {
        st.stage_prefill(f.manager, seqs, {1, 2, 3}, PlanPadding{0, 257}, 0, slot.data());
      },
      "padding.max_q_len = 257", true);
  AttentionBatchConfig small = small_config(16);
  small.max_q_tokens = 40;
  AttentionBatchStager few(small, 2);
  expect_rejected(
      [&] {
        few.stage_prefill(f.manager, seqs, {30, 31, 2}, {}, 0, slot.data());
      },
      "sum of q_lens = 63", true);
  BlockTables tables = f.manager.export_block_tables(seqs);
  tables.context_lens[1] = 500;  // past the tables' own capacity: inconsistent tables
  expect_rejected(
      [&] {
        st.stage_decode(tables.view(), AttentionMode::kPagedDecode, {}, nullptr, 0, slot.data());
      },
      "context_lens[1] = 500", false);
}

}  // namespace
}  // namespace radix_attention
