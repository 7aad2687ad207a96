// The stateful BatchPlanner against the stateless plan(): over random decode-step sequences
// (rows joining, leaving, forking, appending one or many tokens across block boundaries,
// reordering, repeated and unkeyed rows, forests of shared prefixes at block sizes 1-64) every
// plan equals the from-scratch plan, array by array, with the same fingerprint and statistics;
// the same through SequenceManager + RadixTree; and failed calls change nothing.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "cache/planner_test_support.hpp"
#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"

namespace ra = radix_attention;
using planner_test::Batch;

namespace {

void expect_same_plan(const ra::RadixPlan& a, const ra::RadixPlan& b) {
  ASSERT_EQ(a.num_queries, b.num_queries);
  ASSERT_EQ(a.num_segments, b.num_segments);
  ASSERT_EQ(a.chunk_row, b.chunk_row);
  ASSERT_EQ(a.chunk_token_begin, b.chunk_token_begin);
  ASSERT_EQ(a.chunk_token_end, b.chunk_token_end);
  ASSERT_EQ(a.chunk_query_indptr, b.chunk_query_indptr);
  ASSERT_EQ(a.chunk_queries, b.chunk_queries);
  ASSERT_EQ(a.query_partial_indptr, b.query_partial_indptr);
  ASSERT_EQ(a.query_partials, b.query_partials);
  ASSERT_EQ(a.chunk_segment, b.chunk_segment);
  ASSERT_EQ(a.batch_fingerprint, b.batch_fingerprint);
  ASSERT_EQ(a.rows_per_item, b.rows_per_item);
}

void expect_same_stats(const ra::PlanStats& a, const ra::PlanStats& b) {
  EXPECT_EQ(a.num_shared_segments, b.num_shared_segments);
  EXPECT_EQ(a.num_private_segments, b.num_private_segments);
  EXPECT_EQ(a.num_trie_nodes, b.num_trie_nodes);
  EXPECT_EQ(a.chunk_target_tokens, b.chunk_target_tokens);
  EXPECT_EQ(a.modelled_bytes, b.modelled_bytes);  // same arithmetic in the same order: exact
  EXPECT_EQ(a.modelled_bytes_unshared, b.modelled_bytes_unshared);
}

// A row of the simulated engine: an append-only block list under a key.
struct SimRow {
  std::int64_t key;
  std::vector<std::int32_t> blocks;
  std::int32_t len;
};

class Engine {
 public:
  Engine(std::mt19937& rng, std::int32_t block_size) : rng_(rng), bs_(block_size) {
    const std::int32_t scale = bs_ == 1 ? 24 : 4;
    for (int i = 0; i < 5; ++i) {  // prefix pieces, some nested in others
      std::vector<std::int32_t> p;
      if (i > 0 && rng_() % 2 == 0) p = prefixes_[rng_() % prefixes_.size()];
      const auto n = 1 + static_cast<std::int32_t>(rng_() % static_cast<unsigned>(scale));
      for (std::int32_t k = 0; k < n; ++k) p.push_back(next_block_++);
      prefixes_.push_back(p);
    }
  }

  void join() {
    SimRow r{next_key_++, {}, 0};
    if (rng_() % 6 != 0) r.blocks = prefixes_[rng_() % prefixes_.size()];
    r.len = static_cast<std::int32_t>(r.blocks.size()) * bs_;
    rows_.push_back(r);
    append(rows_.back(), static_cast<std::int32_t>(rng_() % (3u * static_cast<unsigned>(bs_) + 1)));
  }
  void fork() {  // shares the parent's full blocks, copies its partial block into a fresh one
    if (rows_.empty()) return;
    const SimRow& p = rows_[rng_() % rows_.size()];
    SimRow c{next_key_++, p.blocks, p.len};
    if (c.len % bs_ != 0) c.blocks.back() = next_block_++;
    rows_.push_back(c);
  }
  void leave() {
    if (!rows_.empty())
      rows_.erase(rows_.begin() + static_cast<std::ptrdiff_t>(rng_() % rows_.size()));
  }
  void decode() {
    for (auto& r : rows_) {
      const unsigned kind = rng_() % 8;
      append(r, kind == 0 ? 0
                : kind == 1
                    ? static_cast<std::int32_t>(1 + rng_() % (2u * static_cast<unsigned>(bs_)))
                    : 1);
    }
  }
  void shuffle() { std::shuffle(rows_.begin(), rows_.end(), rng_); }
  void repeat() {
    if (!rows_.empty()) rows_.push_back(rows_[rng_() % rows_.size()]);
  }
  void drop_repeats() {  // a repeat is a copy: drop copies so appends stay per key
    std::vector<SimRow> kept;
    for (const auto& r : rows_) {
      if (std::none_of(kept.begin(), kept.end(), [&](const SimRow& k) { return k.key == r.key; }))
        kept.push_back(r);
    }
    rows_ = kept;
  }

  // The batch as block tables with a stride wider than the rows and junk padding.
  Batch batch() const {
    Batch b;
    b.block_size = bs_;
    for (const auto& r : rows_) b.add(r.blocks, r.len);
    return b;
  }
  std::vector<std::int64_t> keys() const {
    std::vector<std::int64_t> k;
    for (const auto& r : rows_) k.push_back(r.key);
    return k;
  }
  std::size_t size() const { return rows_.size(); }

 private:
  void append(SimRow& r, std::int32_t tokens) {
    for (std::int32_t t = 0; t < tokens; ++t) {
      if (r.len % bs_ == 0) r.blocks.push_back(next_block_++);
      ++r.len;
    }
  }

  std::mt19937& rng_;
  std::int32_t bs_;
  std::int32_t next_block_ = 0;
  std::int64_t next_key_ = 1000;
  std::vector<std::vector<std::int32_t>> prefixes_;
  std::vector<SimRow> rows_;
};

ra::PlannerOptions random_tuning(std::mt19937& rng) {
  ra::PlannerOptions o;
  const std::int32_t mins[] = {1, 16, 256};
  o.min_chunk_tokens = mins[rng() % 3];
  if (rng() % 2 == 0) o.segment_overhead_bytes = 0;
  if (rng() % 2 == 0) o.merge_launch_bytes = 0;
  o.enable_sharing = rng() % 8 != 0;
  if (rng() % 4 == 0) {  // batch-invariant plans
    o.deterministic = true;
    o.deterministic_chunk_tokens = 64 * (1 + static_cast<std::int32_t>(rng() % 8));
  }
  return o;
}

TEST(BatchPlannerIncremental, RandomStepsEqualFromScratchPlans) {
  const std::int32_t sizes[] = {1, 2, 16, 64};
  int planned = 0, shared = 0;
  for (std::uint32_t seed = 1; seed <= 24; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937 rng(seed);
    const std::int32_t bs = sizes[seed % 4];
    Engine engine(rng, bs);
    const ra::ModelShape model{8 * (1 + static_cast<std::int32_t>(rng() % 4)), 8, 128, 2};
    const ra::DeviceShape device{1 + static_cast<std::int32_t>(rng() % 132), 0};
    ra::BatchPlanner planner(model, device, random_tuning(rng));
    for (int step = 0; step < 150; ++step) {
      SCOPED_TRACE(step);
      engine.drop_repeats();
      const unsigned event = rng() % 16;
      if (event < 4) engine.join();
      if (event == 4 || engine.size() < 2) engine.join();
      if (event == 5) engine.fork();
      if (event == 6 || engine.size() > 40) engine.leave();
      if (event == 7) engine.shuffle();
      if (event == 8) engine.repeat();
      if (event == 9) planner.set_tuning(random_tuning(rng));
      engine.decode();
      if (event == 10) engine.repeat();
      Batch b = engine.batch();
      const ra::BlockTableView view = b.view();
      const std::vector<std::int64_t> keys = engine.keys();
      const bool keyed = rng() % 10 != 0;
      ra::PlanStats got_stats, want_stats;
      const ra::RadixPlan got = planner.plan(view, bs, keyed ? keys.data() : nullptr, &got_stats);
      const ra::RadixPlan want = ra::plan(view, bs, planner.options(), &want_stats);
      expect_same_plan(got, want);
      expect_same_stats(got_stats, want_stats);
      if (::testing::Test::HasFatalFailure()) return;
      ASSERT_EQ(planner.num_cached_rows(), engine.size());
      ++planned;
      shared += want_stats.num_shared_segments > 0;
    }
  }
  EXPECT_GT(shared, planned / 4);  // the sequences exercise sharing, not just private rows
}

// One long-running batch at the benchmark's shape (scaled down): the steady state stays
// incremental (one node per private suffix, nothing rebuilt) and equal to from-scratch plans.
TEST(BatchPlannerIncremental, SteadyStateSharedPrefix) {
  for (const std::int32_t bs : {1, 16}) {
    SCOPED_TRACE(bs);
    Batch b;
    b.block_size = bs;
    const std::int32_t shared_blocks = 512 / bs, own_blocks = 64 / bs;
    std::int32_t next = shared_blocks;
    std::vector<std::int64_t> keys;
    for (std::int32_t q = 0; q < 32; ++q) {
      b.add(planner_test::concat(planner_test::iota_blocks(0, shared_blocks),
                                 planner_test::iota_blocks(next, own_blocks)),
            (shared_blocks + own_blocks) * bs);
      next += own_blocks;
      keys.push_back(7 * q + 3);
    }
    ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{132, 0});
    for (int step = 0; step < 40; ++step) {
      for (std::size_t q = 0; q < b.rows.size(); ++q) {
        if (b.context_lens[q] % bs == 0) b.rows[q].push_back(next++);
        ++b.context_lens[q];
      }
      const ra::BlockTableView view = b.view();
      const ra::RadixPlan got = planner.plan(view, bs, keys.data());
      expect_same_plan(got, ra::plan(view, bs, planner.options()));
      if (::testing::Test::HasFatalFailure()) return;
      EXPECT_EQ(planner.num_cached_nodes(), 33);
    }
  }
}

// Through SequenceManager + RadixTree: add (prefix hits), append_tokens, fork, finish, abort.
TEST(BatchPlannerIncremental, SequenceManagerStepsEqualFromScratchPlans) {
  for (const std::int32_t bs : {1, 16}) {
    for (std::uint32_t seed = 1; seed <= 3; ++seed) {
      SCOPED_TRACE(bs * 100 + static_cast<std::int32_t>(seed));
      std::mt19937 rng(seed);
      ra::BlockAllocator alloc(1 << 15);
      ra::RadixTree tree(alloc, bs);
      ra::SequenceManager sm(alloc, tree);
      std::vector<std::vector<ra::TokenId>> prompts;
      for (int i = 0; i < 3; ++i) {
        prompts.emplace_back(static_cast<std::size_t>(bs * (3 + rng() % 5) + rng() % 7));
        for (auto& t : prompts.back()) t = static_cast<ra::TokenId>(rng() % 1000);
      }
      ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{16, 1});
      std::vector<ra::SequenceId> running;
      for (int step = 0; step < 80; ++step) {
        SCOPED_TRACE(step);
        if (running.size() < 3 || rng() % 3 == 0) {
          std::vector<ra::TokenId> p = prompts[rng() % prompts.size()];
          p.push_back(static_cast<ra::TokenId>(rng() % 1000));
          running.push_back(sm.add(p));
        }
        if (rng() % 5 == 0) running.push_back(sm.fork(running[rng() % running.size()]).child);
        if (running.size() > 4 && rng() % 4 == 0) {
          const std::size_t i = rng() % running.size();
          if (rng() % 2 == 0)
            sm.finish(running[i]);
          else
            sm.abort(running[i]);
          running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
        }
        for (ra::SequenceId s : running) {
          sm.append_tokens(s, std::vector<ra::TokenId>(1 + rng() % 2, 7));
        }
        if (rng() % 6 == 0) std::shuffle(running.begin(), running.end(), rng);
        ra::PlanStats got_stats, want_stats;
        const ra::RadixPlan got = planner.plan(sm, running, &got_stats);
        expect_same_plan(got, ra::plan(sm, running, planner.options(), &want_stats));
        expect_same_stats(got_stats, want_stats);
        if (::testing::Test::HasFatalFailure()) return;
      }
      for (ra::SequenceId s : running) sm.release(s);
    }
  }
}

TEST(BatchPlannerIncremental, FailedCallsChangeNothing) {
  ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{132, 0});
  Batch b;
  b.add({0, 1, 2}, 40);
  b.add({0, 1, 5}, 40);
  const std::vector<std::int64_t> keys{1, 2};
  const ra::RadixPlan& returned = planner.plan(b.view(), 16, keys.data());
  const ra::RadixPlan first = returned;
  ASSERT_EQ(planner.num_cached_rows(), 2u);
  const std::int32_t nodes = planner.num_cached_nodes();
  ra::PlanStats stats;
  stats.num_trie_nodes = 12345;
  b.add({0, 1, 9, -1}, 52);  // a new row using a negative block id
  const std::vector<std::int64_t> keys3{1, 2, 3};
  EXPECT_THROW(planner.plan(b.view(), 16, keys3.data(), &stats), ra::InvalidArgument);
  b.context_lens[2] = 65;  // past the row's capacity
  EXPECT_THROW(planner.plan(b.view(), 16, keys3.data(), &stats), ra::InvalidArgument);
  EXPECT_EQ(stats.num_trie_nodes, 12345);
  expect_same_plan(returned, first);  // the plan returned last is as it was
  EXPECT_EQ(planner.num_cached_rows(), 2u);
  EXPECT_EQ(planner.num_cached_nodes(), nodes);
  b.rows.pop_back();
  b.context_lens.pop_back();
  expect_same_plan(planner.plan(b.view(), 16, keys.data()), first);
  EXPECT_THROW(ra::BatchPlanner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{0, 0}),
               ra::InvalidArgument);  // the SM count is required
  EXPECT_THROW(ra::BatchPlanner(ra::ModelShape{30, 8, 128, 2}, ra::DeviceShape{132, 0}),
               ra::InvalidArgument);
  ra::PlannerOptions bad;
  bad.min_chunk_tokens = 0;
  EXPECT_THROW(planner.set_tuning(bad), ra::InvalidArgument);
  EXPECT_EQ(planner.options().min_chunk_tokens, ra::PlannerOptions{}.min_chunk_tokens);
}

// A keyed row whose cached entries were rewritten (the contract broken where the spot check
// looks: its last full block) is planned as a new row; another block size starts over.
TEST(BatchPlannerIncremental, SpotCheckAndBlockSizeChange) {
  ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{132, 0});
  Batch b;
  for (std::int32_t q = 0; q < 8; ++q) b.add({0, 1, 2, 10 + q}, 60);
  std::vector<std::int64_t> keys(8);
  for (std::int32_t q = 0; q < 8; ++q) keys[static_cast<std::size_t>(q)] = q;
  planner.plan(b.view(), 16, keys.data());
  b.rows[3] = {0, 1, 4, 13};  // rewritten under the same key
  expect_same_plan(planner.plan(b.view(), 16, keys.data()),
                   ra::plan(b.view(), 16, planner.options()));
  b.context_lens.assign(8, 120);  // the same rows read at block size 32
  expect_same_plan(planner.plan(b.view(), 32, keys.data()),
                   ra::plan(b.view(), 32, planner.options()));
}

// Another manager's sequences under the same ids (ids restart in every manager) are other
// rows: the planner starts over instead of taking them for the ones it cached. The manager's
// instance id and ended count drive that and the cached lookups.
TEST(BatchPlannerIncremental, AnotherManagerAndEndedSequences) {
  ra::BlockAllocator alloc(4096);
  ra::SequenceManager a(alloc, 16);
  ra::SequenceManager b(alloc, 16);
  EXPECT_NE(a.instance_id(), b.instance_id());
  const ra::SequenceId pa = a.create(64);
  const ra::SequenceId pb = b.create(48);
  std::vector<ra::SequenceId> sa{pa, a.fork(pa).child, a.fork(pa).child};
  std::vector<ra::SequenceId> sb{pb, b.fork(pb).child, b.fork(pb).child};
  ASSERT_EQ(sa, sb);  // the same ids, other blocks
  ra::BatchPlanner planner(ra::ModelShape{32, 8, 128, 2}, ra::DeviceShape{132, 0});
  for (int step = 0; step < 3; ++step) {
    for (auto s : sa) a.append(s, 5);
    for (auto s : sb) b.append(s, 3);
    expect_same_plan(planner.plan(a, sa), ra::plan(a, sa, planner.options()));
    expect_same_plan(planner.plan(b, sb), ra::plan(b, sb, planner.options()));
  }
  const std::uint64_t ended = a.num_ended();
  a.release(sa[1]);
  EXPECT_EQ(a.num_ended(), ended + 1);
  sa.erase(sa.begin() + 1);
  expect_same_plan(planner.plan(a, sa), ra::plan(a, sa, planner.options()));
  EXPECT_THROW(planner.plan(a, {sa[0], 999}), ra::InvalidArgument);
  expect_same_plan(planner.plan(a, sa), ra::plan(a, sa, planner.options()));
  for (auto s : sa) a.release(s);  // pa among them
  for (auto s : sb) b.release(s);
}

}  // namespace
