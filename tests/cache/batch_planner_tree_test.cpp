// BatchPlanner on batches whose sharing comes from a RadixTree: requests built from random token
// streams (system prompts, few-shot blocks, private suffixes, divergence inside a block) match
// their cached prefix, retain it and allocate the rest, as a serving engine does; finished
// requests are inserted back into the tree. Once by hand over RadixTree, once through
// SequenceManager (add / append_tokens / fork / finish / abort) and plan(manager, batch). Each
// planned batch satisfies the kernel invariants, and when sharing is free in the cost model the
// plan shares exactly what the rows share.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "cache/planner_test_support.hpp"
#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"

namespace ra = radix_attention;
using planner_test::Batch;
using planner_test::expect_plan_invariants;

namespace {

struct Running {
  std::vector<ra::TokenId> tokens;
  std::vector<ra::BlockId> blocks;
  ra::NodeHandle node;
};

// Random token streams over a few shared pieces, so that requests overlap at every depth and
// at any token offset (not only at block boundaries).
class StreamSource {
 public:
  StreamSource(std::mt19937& rng, std::int32_t block_size) : rng_(rng) {
    const std::int32_t scale = block_size == 1 ? 4 : 24;
    for (int i = 0; i < 3; ++i) systems_.push_back(random_tokens(scale * (2 + rng_() % 6)));
    for (int i = 0; i < 6; ++i)
      shots_.push_back(random_tokens(scale * (1 + rng_() % 3) + rng_() % 7));
  }
  std::vector<ra::TokenId> next() {
    std::vector<ra::TokenId> t;
    if (rng_() % 6 != 0) append(t, systems_[rng_() % systems_.size()]);
    if (rng_() % 2 == 0) append(t, shots_[rng_() % shots_.size()]);
    if (rng_() % 3 == 0) append(t, shots_[rng_() % shots_.size()]);
    append(t, random_tokens(static_cast<std::int32_t>(rng_() % 40)));
    return t;
  }

 private:
  std::vector<ra::TokenId> random_tokens(std::uint32_t n) {
    std::vector<ra::TokenId> v(n);
    for (auto& x : v) x = static_cast<ra::TokenId>(rng_() % 5);  // tiny vocabulary: collisions
    return v;
  }
  static void append(std::vector<ra::TokenId>& a, const std::vector<ra::TokenId>& b) {
    a.insert(a.end(), b.begin(), b.end());
  }
  std::mt19937& rng_;
  std::vector<std::vector<ra::TokenId>> systems_, shots_;
};

// Cost parameters under which sharing any full block by >= 2 queries is always cheaper.
ra::PlannerOptions sharing_is_free() {
  ra::PlannerOptions o;
  o.num_q_heads = 1;
  o.num_kv_heads = 1;
  o.head_dim = 1;
  o.kv_element_bytes = 100000;  // token reads dominate partial states by far
  o.segment_overhead_bytes = 0;
  o.merge_launch_bytes = 0;
  o.num_sms = 1;
  o.ctas_per_sm = 1;
  return o;
}

// With free sharing, query q's partial covering full block b is shared with exactly the queries
// whose rows agree with q's on blocks [0, b] and have block b full.
void expect_maximal_sharing(const ra::RadixPlan& plan, const Batch& b) {
  const std::int32_t bs = b.block_size;
  const auto n = static_cast<std::int32_t>(b.rows.size());
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const std::int32_t q0 =
        plan.chunk_queries[static_cast<std::size_t>(plan.chunk_query_indptr[c])];
    const std::int32_t begin = plan.chunk_token_begin[c];
    const std::int32_t end = plan.chunk_token_end[c];
    std::set<std::int32_t> served(plan.chunk_queries.begin() + plan.chunk_query_indptr[c],
                                  plan.chunk_queries.begin() + plan.chunk_query_indptr[c + 1]);
    for (std::int32_t blk = begin / bs; blk * bs < end; ++blk) {
      if ((blk + 1) * bs > b.context_lens[static_cast<std::size_t>(q0)]) break;  // partial block
      std::set<std::int32_t> expected;
      for (std::int32_t q = 0; q < n; ++q) {
        if (b.context_lens[static_cast<std::size_t>(q)] < (blk + 1) * bs) continue;
        const auto& r = b.rows[static_cast<std::size_t>(q)];
        const auto& r0 = b.rows[static_cast<std::size_t>(q0)];
        if (std::equal(r.begin(), r.begin() + blk + 1, r0.begin())) expected.insert(q);
      }
      ASSERT_EQ(served, expected) << "chunk " << c << " block " << blk;
    }
  }
}

void run_tree_batches(std::int32_t block_size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  ra::BlockAllocator alloc(1 << 16);
  ra::RadixTree tree(alloc, block_size);
  StreamSource source(rng, block_size);
  std::vector<Running> running;
  std::int32_t shared_batches = 0;
  for (int step = 0; step < 120; ++step) {
    SCOPED_TRACE(step);
    // Admit requests: match the cached prefix, retain + lock it, allocate the rest.
    const int admit = 1 + static_cast<int>(rng() % 6);
    for (int i = 0; i < admit; ++i) {
      Running r;
      r.tokens = source.next();
      const ra::PrefixMatch m = tree.match_prefix(r.tokens);
      alloc.retain(m.blocks);
      tree.lock(m.node);
      r.node = m.node;
      r.blocks = m.blocks;
      const auto total = (static_cast<std::int32_t>(r.tokens.size()) + block_size - 1) / block_size;
      const auto fresh = alloc.allocate(total - static_cast<std::int32_t>(m.blocks.size()));
      r.blocks.insert(r.blocks.end(), fresh.begin(), fresh.end());
      running.push_back(std::move(r));
    }
    // Plan the running batch.
    Batch b;
    b.block_size = block_size;
    for (const auto& r : running) b.add(r.blocks, static_cast<std::int32_t>(r.tokens.size()));
    const ra::RadixPlan plan = ra::plan(b.view(), b.block_size);
    expect_plan_invariants(plan, b);
    const ra::RadixPlan free_plan = ra::plan(b.view(), b.block_size, sharing_is_free());
    expect_plan_invariants(free_plan, b);
    expect_maximal_sharing(free_plan, b);
    if (::testing::Test::HasFatalFailure()) return;
    shared_batches += planner_test::shared_segments(free_plan).empty() ? 0 : 1;
    // Finish some: cache the full blocks (the tree consumes those references), release the
    // partial last block, unlock the matched prefix.
    const int finish = static_cast<int>(rng() % (running.size() / 2 + 2));
    for (int i = 0; i < finish; ++i) {
      const std::size_t k = rng() % running.size();
      Running r = std::move(running[k]);
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
      const std::size_t full = r.tokens.size() / static_cast<std::size_t>(block_size);
      tree.insert(r.tokens.data(), full * static_cast<std::size_t>(block_size), r.blocks.data(),
                  full);
      for (std::size_t j = full; j < r.blocks.size(); ++j) alloc.release(r.blocks[j]);
      tree.unlock(r.node);
    }
  }
  EXPECT_GT(shared_batches, 60);
  for (auto& r : running) {
    alloc.release(r.blocks);
    tree.unlock(r.node);
  }
  tree.validate();
}

TEST(BatchPlannerTree, RandomStreamsBlockSize16) {
  for (std::uint32_t seed = 1; seed <= 4; ++seed) run_tree_batches(16, seed);
}

TEST(BatchPlannerTree, RandomStreamsBlockSize1) {
  for (std::uint32_t seed = 11; seed <= 14; ++seed) run_tree_batches(1, seed);
}

// The same through SequenceManager + RadixTree, planning with plan(manager, batch, options).
void run_sequence_batches(std::int32_t block_size, std::uint32_t seed) {
  std::mt19937 rng(seed);
  ra::BlockAllocator alloc(1 << 15);
  ra::RadixTree tree(alloc, block_size);
  ra::SequenceManager sm(alloc, tree);
  StreamSource source(rng, block_size);
  std::vector<ra::SequenceId> running;
  std::int32_t shared_batches = 0;
  for (int step = 0; step < 120; ++step) {
    SCOPED_TRACE(step);
    const int admit = 1 + static_cast<int>(rng() % 5);
    for (int i = 0; i < admit; ++i) running.push_back(sm.add(source.next()));
    if (rng() % 4 == 0) running.push_back(sm.fork(running[rng() % running.size()]).child);
    for (ra::SequenceId s : running) {  // decode steps: a new token each, sometimes more
      std::vector<ra::TokenId> t(1 + rng() % 3);
      for (auto& x : t) x = static_cast<ra::TokenId>(rng() % 5);
      if (rng() % 2 == 0) sm.append_tokens(s, t);
    }
    const ra::BlockTables tables = sm.export_block_tables(running);
    Batch b;
    b.block_size = block_size;
    for (std::size_t i = 0; i < running.size(); ++i) {
      b.add(sm.blocks(running[i]), tables.context_lens[i]);
    }
    ra::PlanStats stats;
    const ra::RadixPlan plan = ra::plan(sm, running, {}, &stats);
    EXPECT_NO_THROW(ra::check_plan_for_batch(plan, tables, block_size));
    expect_plan_invariants(plan, b);
    const ra::RadixPlan free_plan = ra::plan(sm, running, sharing_is_free());
    expect_plan_invariants(free_plan, b);
    expect_maximal_sharing(free_plan, b);
    if (::testing::Test::HasFatalFailure()) return;
    // Sequences holding the same cached prefix share it in the free plan.
    for (std::size_t i = 0; i < running.size(); ++i) {
      const std::int32_t cached = sm.cached_prefix_len(running[i]);
      if (cached == 0) continue;
      for (std::size_t j = 0; j < running.size(); ++j) {
        if (j == i || sm.prefix_node(running[j]) != sm.prefix_node(running[i])) continue;
        const auto& bi = b.rows[i];
        const auto& bj = b.rows[j];
        ASSERT_TRUE(std::equal(bi.begin(), bi.begin() + cached / block_size, bj.begin()));
      }
    }
    shared_batches += planner_test::shared_segments(free_plan).empty() ? 0 : 1;
    const int done = static_cast<int>(rng() % (running.size() / 2 + 2));
    for (int i = 0; i < done && !running.empty(); ++i) {
      const std::size_t k = rng() % running.size();
      if (rng() % 5 == 0) {
        sm.abort(running[k]);
      } else {
        sm.finish(running[k]);
      }
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
    }
  }
  EXPECT_GT(shared_batches, 60);
  for (ra::SequenceId s : running) sm.release(s);
  tree.validate();
}

TEST(BatchPlannerTree, SequenceManagerBlockSize16) {
  for (std::uint32_t seed = 21; seed <= 24; ++seed) run_sequence_batches(16, seed);
}

TEST(BatchPlannerTree, SequenceManagerBlockSize1) {
  for (std::uint32_t seed = 31; seed <= 34; ++seed) run_sequence_batches(1, seed);
}

}  // namespace
