// A decode loop on the GPU with the stateful BatchPlanner: requests share cached prompts
// (RadixTree + SequenceManager), every step appends a token to each, requests join, fork and
// finish between steps, the planner (sized by radix_decode_device_shape) plans each step
// incrementally, and every step's radix_decode output is checked against the float64 reference.
// Block sizes 1 and 16.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <type_traits>
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

struct Model {
  int num_q_heads, num_kv_heads, head_dim;
};

template <class T>
void run_decode_loop(int bs, const Model& m, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "bs=" << bs << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int pool = 4096;
  const int D = m.head_dim;
  BlockAllocator allocator(pool);
  RadixTree tree(allocator, bs);
  SequenceManager mgr(allocator, tree);
  const std::vector<TokenId> prompt = random_tokens(rng, 5 * std::max(bs, 16) + 3);
  mgr.finish(mgr.add(prompt));  // cached: later requests share its full blocks
  std::vector<SequenceId> seqs;
  const auto join = [&] {
    std::vector<TokenId> p = prompt;
    const std::vector<TokenId> question = random_tokens(rng, 1 + static_cast<int>(rng() % 40));
    p.insert(p.end(), question.begin(), question.end());
    seqs.push_back(mgr.add(p));
  };
  for (int i = 0; i < 12; ++i) join();

  const DeviceShape device = radix_decode_device_shape<T>(D);
  ASSERT_GE(device.num_sms, 1);
  ASSERT_GE(device.ctas_per_sm, 1);
  PlannerOptions tuning;
  tuning.min_chunk_tokens = 16;   // small chunks: split segments on a small batch
  tuning.merge_launch_bytes = 0;  // share whenever it saves bytes, even on a tiny batch
  tuning.chunk_alignment_tokens = 16;
  BatchPlanner planner(
      ModelShape{m.num_q_heads, m.num_kv_heads, D, static_cast<std::int32_t>(sizeof(T))},
      DeviceShape{device.num_sms * 16, device.ctas_per_sm}, tuning);  // 16x: more chunks

  const std::size_t kv_elems = static_cast<std::size_t>(pool) * bs * m.num_kv_heads * D;
  const auto qkv = test::random_qkv<T>(0, kv_elems, rng);
  DeviceBuffer<T> d_k(qkv.k), d_v(qkv.v);
  PagedKvCacheView<T> cache{d_k.data(), d_v.data(), pool, bs, m.num_kv_heads, D};
  DeviceRadixPlan device_plan;
  int shared_steps = 0;
  for (int step = 0; step < 6; ++step) {
    SCOPED_TRACE(step);
    for (SequenceId s : seqs) mgr.append_tokens(s, random_tokens(rng, 1));
    if (step == 2) join();
    if (step == 3) seqs.push_back(mgr.fork(seqs[1]).child);  // shares all of seqs[1]
    if (step == 4) {
      mgr.finish(seqs[0]);
      seqs.erase(seqs.begin());
    }
    PlanStats stats;
    const RadixPlan& plan = planner.plan(mgr, seqs, &stats);
    shared_steps += stats.num_shared_segments > 0;
    const BlockTables tables = mgr.export_block_tables(seqs);
    ASSERT_NO_THROW(check_plan_for_batch(plan, tables, bs));

    const int n = tables.num_seqs;
    const std::size_t q_elems = static_cast<std::size_t>(n) * m.num_q_heads * D;
    const auto q = test::random_qkv<T>(q_elems, 0, rng).q;
    DeviceBuffer<T> d_q(q), d_out(q_elems);
    DeviceBuffer<std::int32_t> d_tables(tables.block_tables), d_lens(tables.context_lens);
    d_out.poison();
    const BlockTableView view{d_tables.data(),
                              d_lens.data(),
                              n,
                              tables.max_blocks_per_seq,
                              tables.max_blocks_per_seq,
                              -1};
    device_plan.upload(plan, tables.context_lens, m.num_q_heads / m.num_kv_heads, nullptr);
    const std::size_t ws = radix_decode_workspace_bytes(device_plan, m.num_q_heads, D);
    DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
    RadixDecodeOptions options;
    options.expected_batch_fingerprint = fingerprint_batch(tables, bs);
    radix_decode(d_q.data(), m.num_q_heads, cache, view, device_plan, d_out.data(), nullptr,
                 work.data(), ws, nullptr, options);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

    std::vector<double> ref(q_elems);
    reference::HostPagedCache<T> host{qkv.k.data(), qkv.v.data(), pool, bs, m.num_kv_heads, D};
    reference::paged_decode(q.data(), host, tables.block_tables.data(), tables.max_blocks_per_seq,
                            tables.context_lens.data(), n, m.num_q_heads,
                            1.0 / std::sqrt(double(D)), ref.data(), nullptr);
    test::expect_decode_matches(d_out.download(), nullptr, ref, nullptr, tables.context_lens.data(),
                                {n, m.num_q_heads, D}, std::is_same_v<T, float> ? 1e-5 : 1e-2);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(shared_steps, 0) << "the requests share a cached prompt; the plans should too";
  for (SequenceId s : seqs) mgr.release(s);
}

class RadixDecodeBatchPlannerTest : public test::GpuTest {};

TEST_F(RadixDecodeBatchPlannerTest, DecodeLoopBlockSize16) {
  run_decode_loop<__nv_bfloat16>(16, {32, 8, 128}, 1);
  run_decode_loop<float>(16, {8, 2, 64}, 2);
}

TEST_F(RadixDecodeBatchPlannerTest, DecodeLoopBlockSize1) {
  run_decode_loop<__nv_bfloat16>(1, {28, 4, 128}, 3);
}

}  // namespace
}  // namespace radix_attention
