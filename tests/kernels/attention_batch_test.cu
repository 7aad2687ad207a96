// AttentionBatch on the GPU against the float64 reference, bf16 and fp16: a multi-step decode
// loop (SequenceManager + RadixTree, tokens appended between steps, requests joining, forking
// and finishing) planned and run each step in radix and paged mode; steps planned ahead of the
// GPU through the ring of staging slots; prefill then extend steps; maxima violations that
// leave the planned step in place. Fresh random inputs, outputs poisoned before every run.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/attention_batch.cuh"
#include "support/attention_batch_harness.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::Engine;
using test::StepOutput;

constexpr test::HeadShape kHeads{16, 4, 128};

AttentionBatchConfig config_for(int bs, int max_batch, int max_context) {
  AttentionBatchConfig c;
  c.model = ModelShape{kHeads.num_q_heads, kHeads.num_kv_heads, kHeads.head_dim, 0};
  c.block_size = bs;
  c.max_batch_size = max_batch;
  c.max_blocks_per_seq = (max_context + bs - 1) / bs;
  c.max_q_tokens = 1024;
  c.tuning.min_chunk_tokens = 16;  // small chunks: segments split on a small batch
  c.tuning.chunk_alignment_tokens = 16;
  c.tuning.merge_launch_bytes = 0;  // share whenever it saves bytes, even on a tiny batch
  return c;
}

template <class T>
std::vector<T> random_q(std::size_t rows, std::mt19937_64& rng) {
  return test::random_vector<T>(rows * kHeads.num_q_heads * kHeads.head_dim, rng, -3.f, 3.f);
}

/// Plans `seqs` in `mode`, runs on fresh q into poisoned outputs, checks against the reference.
template <class T>
AttentionStep plan_run_check(AttentionBatch<T>& batch, Engine<T>& e,
                             const std::vector<SequenceId>& seqs, AttentionMode mode,
                             cudaStream_t stream, std::mt19937_64& rng) {
  const AttentionStep step = batch.plan_decode(e.manager, seqs, mode, stream);
  const std::vector<T> q = random_q<T>(seqs.size(), rng);
  DeviceBuffer<T> d_q(q);
  StepOutput<T> got(seqs.size(), e.row_elems(), kHeads.num_q_heads);
  got.poison(stream);
  batch.run(d_q.data(), e.cache(), got.out.data(), got.lse.data(), stream);
  RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream));
  test::expect_decode_step(e, e.manager.export_block_tables(seqs), step.launch.rows, q, got);
  return step;
}

template <class T>
void decode_loop(int bs, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "bs=" << bs << " seed=" << seed);
  std::mt19937_64 rng(seed);
  Engine<T> e(bs, kHeads, 4096 / std::min(bs, 4), rng);
  AttentionBatch<T> batch(config_for(bs, 16, 512));
  test::Stream stream;
  const std::vector<TokenId> prompt = test::random_tokens(rng, 5 * 16 + 3);
  e.manager.finish(e.manager.add(prompt));
  std::vector<SequenceId> seqs;
  for (int i = 0; i < 10; ++i) seqs.push_back(e.join(rng, prompt, 40));
  int shared_steps = 0;
  for (int step = 0; step < 8; ++step) {
    SCOPED_TRACE(step);
    for (SequenceId s : seqs) e.manager.append_tokens(s, test::random_tokens(rng, 1));
    if (step == 2) seqs.push_back(e.join(rng, prompt, 40));
    if (step == 3) seqs.push_back(e.manager.fork(seqs[1]).child);  // shares all of seqs[1]
    if (step == 4) {
      e.manager.finish(seqs[0]);
      seqs.erase(seqs.begin());
    }
    if (step == 6) std::swap(seqs[1], seqs[4]);  // rows change order
    const AttentionStep radix =
        plan_run_check(batch, e, seqs, AttentionMode::kRadixDecode, stream.stream, rng);
    shared_steps += radix.stats.num_shared_segments > 0;
    EXPECT_FALSE(radix.radix_fell_back);
    plan_run_check(batch, e, seqs, AttentionMode::kPagedDecode, stream.stream, rng);
    if (::testing::Test::HasFailure()) return;
  }
  EXPECT_GT(shared_steps, 0) << "the requests share a cached prompt; the plans should too";
}

class AttentionBatchTest : public test::GpuTest {};

TEST_F(AttentionBatchTest, DecodeLoopBf16) {
  decode_loop<__nv_bfloat16>(16, 1);
  decode_loop<__nv_bfloat16>(1, 2);
}

TEST_F(AttentionBatchTest, DecodeLoopHalf) {
  decode_loop<__half>(16, 3);
  decode_loop<__half>(4, 4);
}

/// More steps than slots, planned without waiting for the GPU: each plan writes another slot
/// than the copies in flight read (or waits for its own slot's copy), each run reads its step.
template <class T>
void steps_ahead_of_the_gpu(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  Engine<T> e(16, kHeads, 1024, rng);
  AttentionBatch<T> batch(config_for(16, 16, 512));  // 2 slots
  test::Stream stream;
  std::vector<SequenceId> seqs = e.share_prompt(rng, 130, 9, 30);
  constexpr int kSteps = 7;
  std::vector<BlockTables> tables;
  std::vector<std::vector<T>> qs;
  std::vector<DeviceBuffer<T>> d_qs;
  std::vector<StepOutput<T>> outs;
  std::vector<int> rows;
  for (int step = 0; step < kSteps; ++step) {
    for (SequenceId s : seqs) e.manager.append_tokens(s, test::random_tokens(rng, 1 + step % 3));
    if (step == 3) seqs.pop_back();
    const AttentionMode mode =
        step % 3 == 1 ? AttentionMode::kPagedDecode : AttentionMode::kRadixDecode;
    rows.push_back(batch.plan_decode(e.manager, seqs, mode, stream.stream).launch.rows);
    tables.push_back(e.manager.export_block_tables(seqs));
    qs.push_back(random_q<T>(seqs.size(), rng));
    d_qs.emplace_back(qs.back());
    outs.emplace_back(seqs.size(), e.row_elems(), kHeads.num_q_heads);
    outs.back().poison(stream.stream);
    batch.run(d_qs.back().data(), e.cache(), outs.back().out.data(), outs.back().lse.data(),
              stream.stream);
  }
  RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream.stream));
  for (int step = 0; step < kSteps; ++step) {
    SCOPED_TRACE(step);
    const auto s = static_cast<std::size_t>(step);
    test::expect_decode_step(e, tables[s], rows[s], qs[s], outs[s]);
  }
}

TEST_F(AttentionBatchTest, StepsPlannedAheadOfTheGpuThroughTheRing) {
  steps_ahead_of_the_gpu<__nv_bfloat16>(5);
  steps_ahead_of_the_gpu<__half>(6);
}

/// Prefill of requests sharing a cached prompt (only their uncached tokens are query rows),
/// then extend steps of 0..5 new tokens per request.
template <class T>
void prefill_then_extend(int bs, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "bs=" << bs << " seed=" << seed);
  std::mt19937_64 rng(seed);
  Engine<T> e(bs, kHeads, 4096 / std::min(bs, 4), rng);
  AttentionBatch<T> batch(config_for(bs, 8, 512));
  test::Stream stream;
  std::vector<SequenceId> seqs = e.share_prompt(rng, 70, 6, 90);
  std::vector<std::int32_t> q_lens;
  for (SequenceId s : seqs)
    q_lens.push_back(e.manager.context_len(s) - e.manager.cached_prefix_len(s));
  for (int step = 0; step < 4; ++step) {
    SCOPED_TRACE(step);
    if (step > 0) {
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        q_lens[i] = static_cast<std::int32_t>(rng() % 6);
        e.manager.append_tokens(seqs[i], test::random_tokens(rng, q_lens[i]));
      }
    }
    const AttentionStep& step_info = batch.plan_prefill(e.manager, seqs, q_lens, stream.stream);
    ASSERT_EQ(step_info.launch.mode, AttentionMode::kPrefill);
    const auto total = static_cast<std::size_t>(step_info.total_q);
    const std::vector<T> q = random_q<T>(total, rng);
    DeviceBuffer<T> d_q(q);
    StepOutput<T> got(std::max<std::size_t>(total, 1), e.row_elems(), kHeads.num_q_heads);
    got.poison(stream.stream);
    batch.run(d_q.data(), e.cache(), got.out.data(), got.lse.data(), stream.stream);
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream.stream));
    test::expect_prefill_step(e, e.manager.export_block_tables(seqs), q_lens, q, got);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST_F(AttentionBatchTest, PrefillThenExtend) {
  prefill_then_extend<__nv_bfloat16>(16, 7);
  prefill_then_extend<__half>(1, 8);
}

TEST_F(AttentionBatchTest, MaximaViolationsLeaveThePlannedStep) {
  using T = __nv_bfloat16;
  std::mt19937_64 rng(9);
  Engine<T> e(16, kHeads, 1024, rng);
  AttentionBatchConfig config = config_for(16, 8, 256);
  config.max_q_tokens = 256;
  AttentionBatch<T> batch(config);
  test::Stream stream;
  {
    const std::vector<T> q = random_q<T>(1, rng);
    DeviceBuffer<T> d_q(q);
    StepOutput<T> got(1, e.row_elems(), kHeads.num_q_heads);
    EXPECT_THROW(batch.run(d_q.data(), e.cache(), got.out.data(), nullptr, stream.stream),
                 StateError);
  }
  std::vector<SequenceId> seqs = e.share_prompt(rng, 100, 6, 20);
  const AttentionStep planned =
      batch.plan_decode(e.manager, seqs, AttentionMode::kRadixDecode, stream.stream);
  const BlockTables tables = e.manager.export_block_tables(seqs);

  std::vector<SequenceId> nine = seqs;
  while (nine.size() < 9) nine.push_back(e.manager.fork(seqs[0]).child);
  EXPECT_THROW(batch.plan_decode(e.manager, nine, AttentionMode::kRadixDecode, stream.stream),
               CapacityError);
  EXPECT_THROW(batch.plan_decode(e.manager, seqs, AttentionMode::kPagedDecode, stream.stream,
                                 PlanPadding{9}),
               CapacityError);
  const SequenceId too_long = e.manager.add(test::random_tokens(rng, 257));
  EXPECT_THROW(
      batch.plan_decode(e.manager, {seqs[0], too_long}, AttentionMode::kPagedDecode, stream.stream),
      CapacityError);
  std::vector<std::int32_t> whole;  // every context as query rows: over 256 in all
  for (SequenceId s : seqs) whole.push_back(e.manager.context_len(s));
  EXPECT_THROW(batch.plan_prefill(e.manager, seqs, whole, stream.stream), CapacityError);
  EXPECT_EQ(batch.step().launch, planned.launch);
  EXPECT_EQ(batch.step().copy_bytes, planned.copy_bytes);

  // The planned step still runs, and still gives its batch's attention.
  const std::vector<T> q = random_q<T>(seqs.size(), rng);
  DeviceBuffer<T> d_q(q);
  StepOutput<T> got(seqs.size(), e.row_elems(), kHeads.num_q_heads);
  got.poison(stream.stream);
  PagedKvCacheView<T> wrong = e.cache();
  wrong.block_size = 8;
  EXPECT_THROW(batch.run(d_q.data(), wrong, got.out.data(), got.lse.data(), stream.stream),
               InvalidArgument);
  batch.run(d_q.data(), e.cache(), got.out.data(), got.lse.data(), stream.stream);
  RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream.stream));
  test::expect_decode_step(e, tables, planned.launch.rows, q, got);
}

}  // namespace
}  // namespace radix_attention
