// CUDA graphs over AttentionBatch (bf16): one step's run() is captured (cudaStreamBeginCapture
// ... cudaStreamEndCapture, cudaGraphInstantiate) for a bucket of rows, then later batches of
// other sizes (<= the bucket), contexts and sharing (a shared prompt, none) are re-planned
// with padding to the bucket and the graph is replayed; every replay's output, poisoned before,
// is checked against the float64 reference. Radix decode, paged decode and prefill (its grid is
// fixed by the padded rows x max_q_len).

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/attention_batch.cuh"
#include "support/attention_batch_harness.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using T = __nv_bfloat16;
using test::DeviceBuffer;
using test::Engine;
using test::StepOutput;

constexpr test::HeadShape kHeads{32, 8, 128};

/// A captured run() and its instantiated graph.
class CapturedRun {
 public:
  CapturedRun(AttentionBatch<T>& batch, const T* q, const PagedKvCacheView<T>& cache, T* out,
              float* lse, cudaStream_t stream) {
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    try {
      batch.run(q, cache, out, lse, stream);
    } catch (...) {
      cudaGraph_t aborted = nullptr;
      (void)cudaStreamEndCapture(stream, &aborted);
      if (aborted != nullptr) (void)cudaGraphDestroy(aborted);
      throw;
    }
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamEndCapture(stream, &graph_));
    RADIX_ATTENTION_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  CapturedRun(const CapturedRun&) = delete;
  CapturedRun& operator=(const CapturedRun&) = delete;
  ~CapturedRun() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
  }
  void replay(cudaStream_t stream) { RADIX_ATTENTION_CUDA_CHECK(cudaGraphLaunch(exec_, stream)); }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

AttentionBatchConfig graph_config(int bs) {
  AttentionBatchConfig c;
  c.model = ModelShape{kHeads.num_q_heads, kHeads.num_kv_heads, kHeads.head_dim, 0};
  c.block_size = bs;
  c.max_batch_size = 16;
  c.max_blocks_per_seq = (1024 + bs - 1) / bs;
  c.max_q_tokens = 512;
  c.tuning.min_chunk_tokens = 64;
  c.tuning.merge_launch_bytes = 0;  // share whenever it saves bytes, even on a tiny batch
  return c;
}

/// The batches replayed: sizes 1..bucket, with and without a shared prompt, shorter and longer
/// contexts than the captured step's.
std::vector<std::vector<SequenceId>> replay_batches(Engine<T>& e, std::mt19937_64& rng,
                                                    int bucket) {
  std::vector<std::vector<SequenceId>> batches;
  batches.push_back(e.share_prompt(rng, 300, bucket - 2, 60));  // shared, near the bucket
  std::vector<SequenceId> alone;                                // nothing shared
  for (int i = 0; i < 3; ++i)
    alone.push_back(e.manager.add(test::random_tokens(rng, 50 + 300 * i)));
  batches.push_back(alone);
  batches.push_back(e.share_prompt(rng, 700, bucket, 200));  // shared, full bucket, longer
  batches.push_back({alone[2]});                             // one row
  std::vector<SequenceId> mixed = batches[0];                // two prompts + a loner
  mixed.resize(3);
  mixed.insert(mixed.end(), batches[2].begin(), batches[2].begin() + 3);
  mixed.push_back(alone[0]);
  batches.push_back(mixed);
  return batches;
}

/// Captures a decode step of `mode` for rows padded to `bucket`, then replays it for every
/// replay batch (re-planned, padded to the bucket) and checks each output.
void decode_graph(AttentionMode mode, int bs, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << to_string(mode) << " bs=" << bs << " seed=" << seed);
  std::mt19937_64 rng(seed);
  Engine<T> e(bs, kHeads, 16384 / bs, rng);
  AttentionBatch<T> batch(graph_config(bs));
  test::Stream stream;
  constexpr int kBucket = 8;
  // Fixed buffers of the bucket's size: the graph holds their addresses.
  DeviceBuffer<T> d_q(kBucket * e.row_elems());
  StepOutput<T> got(kBucket, e.row_elems(), kHeads.num_q_heads);

  const std::vector<SequenceId> first = e.share_prompt(rng, 100, 5, 30);
  const AttentionStep& planned =
      batch.plan_decode(e.manager, first, mode, stream.stream, PlanPadding{kBucket});
  const LaunchShape captured_shape = planned.launch;
  CapturedRun graph(batch, d_q.data(), e.cache(), got.out.data(), got.lse.data(), stream.stream);

  std::vector<std::vector<SequenceId>> batches = replay_batches(e, rng, kBucket);
  batches.insert(batches.begin(), first);
  int shared = 0;
  for (std::size_t i = 0; i < batches.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "replay " << i << ", " << batches[i].size() << " rows");
    for (SequenceId s : batches[i]) e.manager.append_tokens(s, test::random_tokens(rng, 1));
    const AttentionStep& step =
        batch.plan_decode(e.manager, batches[i], mode, stream.stream, PlanPadding{kBucket});
    ASSERT_EQ(step.launch, captured_shape);
    shared += step.stats.num_shared_segments > 0;
    const std::vector<T> q = test::random_vector<T>(kBucket * e.row_elems(), rng, -3.f, 3.f);
    d_q.upload(q);
    got.poison(stream.stream);
    graph.replay(stream.stream);
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream.stream));
    test::expect_decode_step(e, e.manager.export_block_tables(batches[i]), kBucket, q, got);
    if (::testing::Test::HasFailure()) return;
  }
  if (mode == AttentionMode::kRadixDecode) EXPECT_GE(shared, 3) << "replays of shared prompts";
}

class CudaGraphTest : public test::GpuTest {};

TEST_F(CudaGraphTest, RadixDecodeReplaysAfterReplanning) {
  decode_graph(AttentionMode::kRadixDecode, 16, 1);
  decode_graph(AttentionMode::kRadixDecode, 1, 2);
}

TEST_F(CudaGraphTest, PagedDecodeReplaysAfterReplanning) {
  decode_graph(AttentionMode::kPagedDecode, 16, 3);
  decode_graph(AttentionMode::kPagedDecode, 1, 4);
}

TEST_F(CudaGraphTest, PrefillReplaysAfterReplanning) {
  std::mt19937_64 rng(5);
  Engine<T> e(16, kHeads, 1024, rng);
  AttentionBatch<T> batch(graph_config(16));
  test::Stream stream;
  constexpr int kRows = 6, kMaxQLen = 96, kQRows = 512;
  const PlanPadding bucket{kRows, kMaxQLen};
  DeviceBuffer<T> d_q(kQRows * e.row_elems());
  StepOutput<T> got(kQRows, e.row_elems(), kHeads.num_q_heads);

  // Step 0: a prompt's requests prefill their own tokens; then other batches extend.
  std::vector<SequenceId> seqs = e.share_prompt(rng, 200, 4, 80);
  std::vector<std::int32_t> q_lens;
  for (SequenceId s : seqs)
    q_lens.push_back(e.manager.context_len(s) - e.manager.cached_prefix_len(s));
  const LaunchShape captured_shape =
      batch.plan_prefill(e.manager, seqs, q_lens, stream.stream, bucket).launch;
  std::vector<T> q = test::random_vector<T>(kQRows * e.row_elems(), rng, -3.f, 3.f);
  d_q.upload(q);
  CapturedRun graph(batch, d_q.data(), e.cache(), got.out.data(), got.lse.data(), stream.stream);

  for (int replay = 0; replay < 5; ++replay) {
    SCOPED_TRACE(replay);
    if (replay == 2) seqs.push_back(e.manager.add(test::random_tokens(rng, 90)));  // q_len 90
    if (replay == 3) seqs.erase(seqs.begin(), seqs.begin() + 2);
    if (replay > 0) {
      q_lens.assign(seqs.size(), 0);
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        const bool fresh = replay == 2 && i + 1 == seqs.size();
        q_lens[i] = fresh ? 90 : static_cast<std::int32_t>(1 + rng() % kMaxQLen);
        if (!fresh) e.manager.append_tokens(seqs[i], test::random_tokens(rng, q_lens[i]));
      }
    }
    const AttentionStep& step = batch.plan_prefill(e.manager, seqs, q_lens, stream.stream, bucket);
    ASSERT_EQ(step.launch, captured_shape);
    q = test::random_vector<T>(kQRows * e.row_elems(), rng, -3.f, 3.f);
    d_q.upload(q);
    got.poison(stream.stream);
    graph.replay(stream.stream);
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream.stream));
    test::expect_prefill_step(e, e.manager.export_block_tables(seqs), q_lens, q, got);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST_F(CudaGraphTest, PlanOnACapturingStreamIsRejected) {
  std::mt19937_64 rng(6);
  Engine<T> e(16, kHeads, 256, rng);
  AttentionBatch<T> batch(graph_config(16));
  test::Stream stream;
  const std::vector<SequenceId> seqs = e.share_prompt(rng, 40, 2, 10);
  RADIX_ATTENTION_CUDA_CHECK(cudaStreamBeginCapture(stream.stream, cudaStreamCaptureModeGlobal));
  EXPECT_THROW(batch.plan_decode(e.manager, seqs, AttentionMode::kRadixDecode, stream.stream),
               StateError);
  cudaGraph_t graph = nullptr;
  RADIX_ATTENTION_CUDA_CHECK(cudaStreamEndCapture(stream.stream, &graph));
  if (graph != nullptr) RADIX_ATTENTION_CUDA_CHECK(cudaGraphDestroy(graph));
  EXPECT_FALSE(batch.planned());
}

}  // namespace
}  // namespace radix_attention
