// BatchPlanner on random forests of shared prefixes: every plan satisfies the kernel's
// invariants, chunking bounds hold, the modelled cost equals the plan's segments' cost, and the
// sharing decision is optimal (exhaustive search over the trie's nodes on small batches).

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cache/planner_test_support.hpp"
#include "radix_attention/cache/batch_planner.hpp"

namespace ra = radix_attention;
using planner_test::Batch;
using planner_test::expect_plan_invariants;
using planner_test::segments_of;

namespace {

struct Forest {
  Batch batch;
  std::int32_t pad = 0;  // extra junk entries at the end of each row
};

// Random prefix nodes (each a run of fresh block ids under a random parent); each query takes
// the path to a random node (or none), private blocks, and often a partial last block.
Forest random_forest(std::mt19937& rng, std::int32_t max_nodes, std::int32_t max_queries) {
  const std::int32_t sizes[] = {1, 2, 16, 64};
  Forest f;
  Batch& b = f.batch;
  b.block_size = sizes[rng() % 4];
  const std::int32_t max_len = b.block_size == 1 ? 64 : 12;
  std::int32_t next = static_cast<std::int32_t>(rng() % 50);
  std::vector<std::vector<std::int32_t>> paths;
  const auto num_nodes = static_cast<std::int32_t>(rng() % static_cast<unsigned>(max_nodes + 1));
  for (std::int32_t n = 0; n < num_nodes; ++n) {
    std::vector<std::int32_t> path;
    if (n > 0 && rng() % 3 != 0) path = paths[rng() % paths.size()];
    const auto len = 1 + static_cast<std::int32_t>(rng() % static_cast<unsigned>(max_len));
    for (std::int32_t i = 0; i < len; ++i) path.push_back(next++);
    paths.push_back(path);
  }
  const auto num_queries =
      1 + static_cast<std::int32_t>(rng() % static_cast<unsigned>(max_queries));
  for (std::int32_t q = 0; q < num_queries; ++q) {
    const unsigned kind = rng() % 10;
    if (kind == 0) {
      b.add({}, 0);
      continue;
    }
    if (kind == 1 && !b.rows.empty()) {  // an identical request
      const std::size_t src = rng() % b.rows.size();
      b.add(b.rows[src], b.context_lens[src]);
      continue;
    }
    std::vector<std::int32_t> row;
    if (!paths.empty() && rng() % 5 != 0) row = paths[rng() % paths.size()];
    const auto priv = static_cast<std::int32_t>(rng() % 4);
    for (std::int32_t i = 0; i < priv; ++i) row.push_back(next++);
    std::int32_t len = static_cast<std::int32_t>(row.size()) * b.block_size;
    if (rng() % 2 == 0) {  // a private, partially filled last block
      row.push_back(next++);
      len += 1 + static_cast<std::int32_t>(rng() % static_cast<unsigned>(b.block_size));
      len = std::min(len, static_cast<std::int32_t>(row.size()) * b.block_size);
    } else if (!row.empty() && rng() % 4 == 0) {  // ends inside a (possibly shared) block
      len -= static_cast<std::int32_t>(rng() % static_cast<unsigned>(b.block_size));
    }
    b.add(row, len);
  }
  f.pad = static_cast<std::int32_t>(rng() % 3);
  return f;
}

// View with junk (valid-looking block ids) past each row's used entries: never read.
ra::BlockTableView padded_view(Forest& f, std::mt19937& rng) {
  ra::BlockTableView v = f.batch.view();
  if (f.pad == 0) return v;
  const std::int32_t stride = v.max_blocks_per_seq + f.pad;
  std::vector<std::int32_t> wide(static_cast<std::size_t>(v.num_seqs) *
                                 static_cast<std::size_t>(stride));
  for (auto& x : wide) x = static_cast<std::int32_t>(rng() % 8);
  for (std::int32_t q = 0; q < v.num_seqs; ++q) {
    const auto& row = f.batch.rows[static_cast<std::size_t>(q)];
    const auto used = static_cast<std::size_t>(
        (f.batch.context_lens[static_cast<std::size_t>(q)] + f.batch.block_size - 1) /
        f.batch.block_size);
    std::copy(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(used),
              wide.begin() + static_cast<std::ptrdiff_t>(q) * stride);
  }
  f.batch.table = std::move(wide);
  v.block_tables = f.batch.table.data();
  v.row_stride = stride;  // max_blocks_per_seq stays: the junk lies past the usable entries
  return v;
}

ra::PlannerOptions random_options(std::mt19937& rng) {
  ra::PlannerOptions o;
  const std::int32_t sms[] = {1, 8, 132};
  const std::int32_t mins[] = {1, 16, 256};
  const std::int32_t aligns[] = {1, 16, 64};
  o.num_sms = sms[rng() % 3];
  o.ctas_per_sm = static_cast<std::int32_t>(rng() % 3);  // 0: from head_dim
  o.min_chunk_tokens = mins[rng() % 3];
  o.chunk_alignment_tokens = aligns[rng() % 3];
  if (rng() % 2 == 0) {
    o.max_chunk_tokens =
        ((o.min_chunk_tokens + o.chunk_alignment_tokens - 1) / o.chunk_alignment_tokens +
         static_cast<std::int32_t>(rng() % 4)) *
        o.chunk_alignment_tokens;
  }
  if (rng() % 2 == 0) o.segment_overhead_bytes = 0;
  if (rng() % 2 == 0) o.merge_launch_bytes = 0;
  if (rng() % 3 == 0) {
    o.num_q_heads = 8;
    o.num_kv_heads = 1;
    o.head_dim = 64;
  }
  o.enable_sharing = rng() % 8 != 0;
  return o;
}

double segments_cost(const std::vector<planner_test::Segment>& segs, const ra::PlannerOptions& o) {
  const double B = 2.0 * o.num_kv_heads * o.head_dim * o.kv_element_bytes;
  const double P = 2.0 * o.num_q_heads * (o.head_dim + 1.0) * 4.0;
  double cost = 0;
  for (const auto& s : segs) {
    cost += (s.end - s.begin) * B + static_cast<double>(s.queries.size()) * P +
            o.segment_overhead_bytes;
  }
  return cost;
}

TEST(BatchPlannerRandom, PlansSatisfyKernelInvariants) {
  std::mt19937 rng(20261125);
  for (int iter = 0; iter < 1500; ++iter) {
    SCOPED_TRACE(iter);
    Forest f = random_forest(rng, 10, 40);
    const ra::PlannerOptions o = random_options(rng);
    const ra::BlockTableView v = padded_view(f, rng);
    ra::PlanStats stats;
    const std::int32_t bs = f.batch.block_size;
    const ra::RadixPlan plan = ra::plan(v, bs, o, &stats);
    ASSERT_NO_THROW(ra::check_plan_for_batch(plan, v, bs));
    // Deterministic.
    const ra::RadixPlan again = ra::plan(v, bs, o);
    ASSERT_EQ(again.chunk_queries, plan.chunk_queries);
    ASSERT_EQ(again.chunk_token_begin, plan.chunk_token_begin);

    // Chunking bounds.
    const auto segs = segments_of(plan);
    std::int32_t align = (o.chunk_alignment_tokens + bs - 1) / bs * bs;
    if (o.max_chunk_tokens > 0 && align > o.max_chunk_tokens) align = o.chunk_alignment_tokens;
    for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
      const std::int32_t len = plan.chunk_token_end[c] - plan.chunk_token_begin[c];
      const auto& seg = segs[static_cast<std::size_t>(plan.chunk_segment[c])];
      if (o.max_chunk_tokens > 0) {
        ASSERT_LE(len, o.max_chunk_tokens);
      }
      if (seg.num_chunks > 1 && o.max_chunk_tokens == 0) {
        ASSERT_GE(len, o.min_chunk_tokens);
      }
      if (plan.chunk_token_end[c] != seg.end) {
        ASSERT_EQ(len % align, 0) << "chunk " << c;
      }
    }
    if (!o.enable_sharing) {
      ASSERT_TRUE(planner_test::shared_segments(plan).empty());
    }

    // The modelled cost is the plan's cost; sharing is never modelled as worse than none.
    bool merges = false;
    for (std::int32_t q = 0; q < plan.num_queries; ++q) {
      std::vector<std::int32_t> seen;
      for (auto i = plan.query_partial_indptr[q]; i < plan.query_partial_indptr[q + 1]; ++i) {
        const std::int32_t p = plan.query_partials[static_cast<std::size_t>(i)];
        const auto c = static_cast<std::size_t>(
            std::upper_bound(plan.chunk_query_indptr.begin(), plan.chunk_query_indptr.end(), p) -
            plan.chunk_query_indptr.begin() - 1);
        seen.push_back(plan.chunk_segment[c]);
      }
      std::sort(seen.begin(), seen.end());
      merges = merges || std::unique(seen.begin(), seen.end()) - seen.begin() >= 2;
    }
    const double expected = segments_cost(segs, o) + (merges ? o.merge_launch_bytes : 0.0);
    ASSERT_NEAR(stats.modelled_bytes, expected, 1e-9 * expected);
    ASSERT_LE(stats.modelled_bytes, stats.modelled_bytes_unshared * (1 + 1e-12));

    // Last: it rebuilds the batch's table without the junk padding (v is stale afterwards).
    expect_plan_invariants(plan, f.batch);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Exhaustive search over which trie nodes are shared (through the planner's internals) on
// small batches: the dynamic programme finds the minimum of the modelled cost.
TEST(BatchPlannerRandom, SharingDecisionIsOptimal) {
  std::mt19937 rng(7);
  int searched = 0;
  for (int iter = 0; iter < 600; ++iter) {
    SCOPED_TRACE(iter);
    Forest f = random_forest(rng, 6, 12);
    ra::PlannerOptions o = random_options(rng);
    o.enable_sharing = true;
    // Small costs per segment and partial so that decisions go both ways.
    const double overheads[] = {0.0, 16384.0, 262144.0};
    o.segment_overhead_bytes = overheads[rng() % 3];
    o.num_q_heads = 8 * (1 + static_cast<std::int32_t>(rng() % 4));
    o.num_kv_heads = 8;
    const ra::detail::BatchRows v = ra::detail::checked_rows(f.batch.view(), f.batch.block_size);
    ra::detail::BlockTrie trie;
    ra::detail::build_block_trie(v, trie);
    std::vector<std::size_t> candidates;
    for (std::size_t n = 0; n < trie.nodes.size(); ++n) {
      if (trie.nodes[n].num_queries() >= 2) candidates.push_back(n);
    }
    if (candidates.size() > 12) continue;
    ++searched;
    ra::detail::CostModel m;
    m.token_bytes = 2.0 * o.num_kv_heads * o.head_dim * o.kv_element_bytes;
    m.partial_bytes = 2.0 * o.num_q_heads * (o.head_dim + 1.0) * 4.0;
    m.segment_bytes = o.segment_overhead_bytes;
    ra::detail::SharingDecision decision;
    ra::detail::decide_sharing(v, trie, m, decision);

    double best = std::numeric_limits<double>::infinity();
    std::vector<std::uint8_t> shared(trie.nodes.size(), 0);
    ra::detail::SegmentList segs;
    for (std::uint32_t mask = 0; mask < (1u << candidates.size()); ++mask) {
      for (std::size_t i = 0; i < candidates.size(); ++i) shared[candidates[i]] = (mask >> i) & 1u;
      ra::detail::build_segments(v, trie, shared, segs);
      double cost = 0;
      for (const auto& s : segs.segments) {
        cost +=
            (s.end - s.begin) * m.token_bytes + s.num_queries * m.partial_bytes + m.segment_bytes;
      }
      best = std::min(best, cost);
    }
    if (v.num_seqs > 0 && best == std::numeric_limits<double>::infinity()) best = 0;
    ASSERT_NEAR(decision.shared_cost, best, 1e-9 * std::max(1.0, best));
    ra::detail::build_segments(v, trie, decision.shared, segs);
    double chosen = 0;
    for (const auto& s : segs.segments) {
      chosen +=
          (s.end - s.begin) * m.token_bytes + s.num_queries * m.partial_bytes + m.segment_bytes;
    }
    ASSERT_NEAR(chosen, best, 1e-9 * std::max(1.0, best));
  }
  EXPECT_GT(searched, 300);
}

}  // namespace
