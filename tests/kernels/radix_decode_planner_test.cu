// radix_decode on plans from the batch planner: random token streams go through RadixTree and
// SequenceManager (cached system prompts, nested few-shot prefixes, random suffixes, decode
// steps), the planner finds the sharing, and every output row is checked against the float64
// reference over the sequence's full context. Block sizes 1 and 16. Also: a plan goes stale
// when the batch changes, and the launcher rejects it.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/random_tokens.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::random_tokens;

std::vector<TokenId> concat(std::vector<TokenId> a, const std::vector<TokenId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct Model {
  int num_q_heads, num_kv_heads, head_dim;
};

/// Builds a random batch through the prefix cache: `prompts` system prompts (some of them
/// extended by few-shot blocks) are cached by finished warm-up requests; then `batch` requests
/// pick a prompt, add a random question, and decode a few tokens. Returns the batch's tables.
BlockTables random_batch(SequenceManager& mgr, std::mt19937_64& rng, int bs, int batch,
                         std::vector<SequenceId>& seqs) {
  const int unit = std::max(bs, 16);  // prompt lengths in tokens, whatever the block size
  std::uniform_int_distribution<int> len(1, 5 * unit + 3);
  const std::vector<TokenId> global = random_tokens(rng, 3 * unit + 5);
  std::vector<std::vector<TokenId>> prompts;
  for (int i = 0; i < 3; ++i) {
    prompts.push_back(concat(global, random_tokens(rng, len(rng))));  // nested: global + own
  }
  prompts.push_back(random_tokens(rng, 2 * unit + 1));  // an unrelated prompt
  for (const auto& p : prompts) {
    const SequenceId warm = mgr.add(p);
    mgr.finish(warm);  // caches its full blocks
  }
  std::uniform_int_distribution<int> pick(0, static_cast<int>(prompts.size()) - 1);
  std::uniform_int_distribution<int> steps(0, 3);
  for (int i = 0; i < batch; ++i) {
    const auto& p = prompts[static_cast<std::size_t>(pick(rng))];
    // Some requests are identical to their prompt; most add a question.
    const SequenceId s = mgr.add(i % 5 == 0 ? p : concat(p, random_tokens(rng, len(rng))));
    for (int k = steps(rng); k > 0; --k) mgr.append_tokens(s, random_tokens(rng, 1));
    seqs.push_back(s);
  }
  return mgr.export_block_tables(seqs);
}

template <class T>
void run_planned(int bs, const Model& m, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "bs=" << bs << " dtype=" << DTypeTraits<T>::name << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int pool = 4096;
  BlockAllocator allocator(pool);
  RadixTree tree(allocator, bs);
  SequenceManager mgr(allocator, tree);
  std::vector<SequenceId> seqs;
  const BlockTables tables = random_batch(mgr, rng, bs, 24, seqs);

  PlannerOptions po;
  po.num_q_heads = m.num_q_heads;
  po.num_kv_heads = m.num_kv_heads;
  po.head_dim = m.head_dim;
  po.kv_element_bytes = sizeof(T);
  po.min_chunk_tokens = 16;   // small chunks: exercise split segments on a small batch
  po.merge_launch_bytes = 0;  // share whenever it saves bytes, even on a tiny batch
  po.segment_overhead_bytes = 0;
  po.num_sms = 2048;  // a small chunk target: split segments on a small batch
  po.chunk_alignment_tokens = 16;
  PlanStats stats;
  const RadixPlan plan = radix_attention::plan(tables, bs, po, &stats);
  check_plan_for_batch(plan, tables, bs);
  EXPECT_GT(stats.num_shared_segments, 0) << "the batch shares prompts; the plan should too";

  const int D = m.head_dim;
  const int n = tables.num_seqs;
  const std::size_t kv_elems = static_cast<std::size_t>(pool) * bs * m.num_kv_heads * D;
  const std::size_t q_elems = static_cast<std::size_t>(n) * m.num_q_heads * D;
  const auto [q, k, v] = test::random_qkv<T>(q_elems, kv_elems, rng);
  DeviceBuffer<T> d_q(q), d_k(k), d_v(v), d_out(q_elems);
  DeviceBuffer<std::int32_t> d_tables(tables.block_tables), d_lens(tables.context_lens);
  d_out.poison();
  PagedKvCacheView<T> cache{d_k.data(), d_v.data(), pool, bs, m.num_kv_heads, D};
  BlockTableView view{
      d_tables.data(), d_lens.data(), n, tables.max_blocks_per_seq, tables.max_blocks_per_seq, -1};

  DeviceRadixPlan device_plan;
  device_plan.upload(plan, tables.context_lens, m.num_q_heads / m.num_kv_heads, nullptr);
  const std::size_t ws = radix_decode_workspace_bytes(device_plan, m.num_q_heads, D);
  DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
  work.poison();
  RadixDecodeOptions options;
  options.expected_batch_fingerprint = fingerprint_batch(tables, bs);
  radix_decode(d_q.data(), m.num_q_heads, cache, view, device_plan, d_out.data(), nullptr,
               work.data(), ws, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = d_out.download();

  std::vector<double> ref(q_elems);
  reference::HostPagedCache<T> host{k.data(), v.data(), pool, bs, m.num_kv_heads, D};
  reference::paged_decode(q.data(), host, tables.block_tables.data(), tables.max_blocks_per_seq,
                          tables.context_lens.data(), n, m.num_q_heads, 1.0 / std::sqrt(double(D)),
                          ref.data(), nullptr);
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-2;
  int bad = 0;
  for (std::size_t row = 0; row < static_cast<std::size_t>(n) * m.num_q_heads; ++row) {
    double err2 = 0.0, ref2 = 0.0;
    for (int d = 0; d < D; ++d) {
      const double o = static_cast<float>(out[row * D + d]);
      const double r = ref[row * D + d];
      if (!std::isfinite(o) && bad++ < 5) ADD_FAILURE() << "non-finite output in row " << row;
      err2 += (o - r) * (o - r);
      ref2 += r * r;
    }
    if (ref2 > 0 && std::sqrt(err2 / ref2) > tol && bad++ < 5) {
      ADD_FAILURE() << "row " << row << " rel err " << std::sqrt(err2 / ref2);
    }
  }

  // The batch moves on (one more token for one sequence): the old plan is stale.
  mgr.append_tokens(seqs[1], random_tokens(rng, 1));
  const BlockTables next = mgr.export_block_tables(seqs);
  RadixDecodeOptions fresh;
  fresh.expected_batch_fingerprint = fingerprint_batch(next, bs);
  EXPECT_THROW(radix_decode(d_q.data(), m.num_q_heads, cache, view, device_plan, d_out.data(),
                            nullptr, work.data(), ws, nullptr, fresh),
               StateError);
}

class RadixDecodePlannerTest : public test::GpuTest {};

TEST_F(RadixDecodePlannerTest, RandomTokenStreamsBlockSize16) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed)
    run_planned<__nv_bfloat16>(16, {32, 8, 128}, seed);
  run_planned<float>(16, {8, 2, 64}, 4);
}

TEST_F(RadixDecodePlannerTest, RandomTokenStreamsBlockSize1) {
  for (std::uint64_t seed = 11; seed <= 13; ++seed)
    run_planned<__nv_bfloat16>(1, {28, 4, 128}, seed);
  run_planned<float>(1, {6, 1, 128}, 14);
}

}  // namespace
}  // namespace radix_attention
