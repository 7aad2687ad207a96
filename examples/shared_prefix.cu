// Shared system prompt, end to end: requests go through the prefix cache (RadixTree +
// SequenceManager), the batch planner finds the shared prompt, and radix_decode reads its KV
// once for the whole batch. Prints the decode-step time with and without sharing (same batch,
// same kernel; the no-sharing plan is plain paged decode) and the largest error against the
// float64 reference.
//
//   ./example_shared_prefix

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"

using namespace radix_attention;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kQHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;
constexpr int kRequests = 64, kSystemPrompt = 4096, kPool = 1536;

std::vector<TokenId> random_tokens(std::mt19937_64& rng, int n) {
  std::uniform_int_distribution<TokenId> dist(0, 50000);
  std::vector<TokenId> out(static_cast<std::size_t>(n));
  for (auto& t : out) t = dist(rng);
  return out;
}

template <class T>
struct Device {
  T* ptr = nullptr;
  explicit Device(const std::vector<T>& host) {
    RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&ptr, host.size() * sizeof(T)));
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~Device() { (void)cudaFree(ptr); }
};

/// Median time (us) of `launch` over 20 runs, CUDA events.
template <class F>
double median_us(F&& launch) {
  cudaEvent_t a, b;
  RADIX_ATTENTION_CUDA_CHECK(cudaEventCreate(&a));
  RADIX_ATTENTION_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < 23; ++i) {
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(a));
    launch();
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(b));
    RADIX_ATTENTION_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    RADIX_ATTENTION_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (i >= 3) t.push_back(ms * 1e3);  // first runs: warm-up
  }
  (void)cudaEventDestroy(a);
  (void)cudaEventDestroy(b);
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device: nothing to run\n");
    return 0;
  }
  std::mt19937_64 rng(42);

  // 1. Prefix cache: one request with the system prompt finishes and caches it; the batch's
  //    requests (prompt + their own question) then match it and share its blocks.
  BlockAllocator allocator(kPool);
  RadixTree tree(allocator, kBlock);
  SequenceManager manager(allocator, tree);
  const std::vector<TokenId> system_prompt = random_tokens(rng, kSystemPrompt);
  manager.finish(manager.add(system_prompt));
  std::vector<SequenceId> batch;
  std::uniform_int_distribution<int> question(32, 200);
  for (int i = 0; i < kRequests; ++i) {
    std::vector<TokenId> prompt = system_prompt;
    const std::vector<TokenId> q = random_tokens(rng, question(rng));
    prompt.insert(prompt.end(), q.begin(), q.end());
    batch.push_back(manager.add(prompt));
  }
  const BlockTables tables = manager.export_block_tables(batch);
  std::printf("%d requests, %d-token system prompt: %d of %d tokens came from the cache\n",
              kRequests, kSystemPrompt, manager.cached_prefix_len(batch[0]),
              tables.context_lens[0]);

  // 2. Plans: the planner's (sharing) and plain paged decode (no sharing), same batch.
  PlannerOptions options;  // defaults: 32 q / 8 kv heads, head_dim 128, bf16, H100
  PlanStats stats;
  const RadixPlan shared_plan = plan(tables, kBlock, options, &stats);
  PlannerOptions no_share = options;
  no_share.enable_sharing = false;
  const RadixPlan plain_plan = plan(tables, kBlock, no_share);
  std::printf("plan: %d shared + %d private segments, %d chunks, %d partials\n",
              stats.num_shared_segments, stats.num_private_segments, shared_plan.num_chunks(),
              shared_plan.num_partials());

  // 3. Device data: random K/V for the whole pool, random queries.
  const std::size_t kv_elems = static_cast<std::size_t>(kPool) * kBlock * kKvHeads * kHeadDim;
  const std::size_t q_elems = static_cast<std::size_t>(kRequests) * kQHeads * kHeadDim;
  std::uniform_real_distribution<float> uni(-1.f, 1.f);
  std::vector<bf16> k(kv_elems), v(kv_elems), q(q_elems);
  for (auto& x : k) x = __float2bfloat16(uni(rng));
  for (auto& x : v) x = __float2bfloat16(uni(rng));
  for (auto& x : q) x = __float2bfloat16(3.f * uni(rng));
  Device<bf16> d_k(k), d_v(v), d_q(q), d_out(q);
  Device<std::int32_t> d_tables(tables.block_tables), d_lens(tables.context_lens);
  const PagedKvCacheView<bf16> cache{d_k.ptr, d_v.ptr, kPool, kBlock, kKvHeads, kHeadDim};
  const BlockTableView view{d_tables.ptr,
                            d_lens.ptr,
                            tables.num_seqs,
                            tables.max_blocks_per_seq,
                            tables.max_blocks_per_seq,
                            -1};

  // 4. Upload both plans (one copy each) and time one decode step with each.
  DeviceRadixPlan shared, plain;
  shared.upload(shared_plan, tables.context_lens, kQHeads / kKvHeads, nullptr);
  plain.upload(plain_plan, tables.context_lens, kQHeads / kKvHeads, nullptr);
  const std::size_t ws = std::max(radix_decode_workspace_bytes(shared, kQHeads, kHeadDim),
                                  radix_decode_workspace_bytes(plain, kQHeads, kHeadDim));
  void* workspace = nullptr;
  RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&workspace, ws));
  RadixDecodeOptions run;
  run.expected_batch_fingerprint = fingerprint_batch(tables, kBlock);
  const double t_plain = median_us([&] {
    radix_decode(d_q.ptr, kQHeads, cache, view, plain, d_out.ptr, nullptr, workspace, ws, nullptr,
                 run);
  });
  const double t_shared = median_us([&] {
    radix_decode(d_q.ptr, kQHeads, cache, view, shared, d_out.ptr, nullptr, workspace, ws, nullptr,
                 run);
  });
  std::printf("decode step: %.1f us without sharing, %.1f us with sharing (%.2fx)\n", t_plain,
              t_shared, t_plain / t_shared);

  // 5. The shared run's output against the float64 reference over every full context.
  std::vector<bf16> out(q_elems);
  RADIX_ATTENTION_CUDA_CHECK(
      cudaMemcpy(out.data(), d_out.ptr, q_elems * sizeof(bf16), cudaMemcpyDeviceToHost));
  std::vector<double> ref(q_elems);
  reference::HostPagedCache<bf16> host{k.data(), v.data(), kPool, kBlock, kKvHeads, kHeadDim};
  reference::paged_decode(q.data(), host, tables.block_tables.data(), tables.max_blocks_per_seq,
                          tables.context_lens.data(), tables.num_seqs, kQHeads,
                          1.0 / std::sqrt(double(kHeadDim)), ref.data(), nullptr);
  double max_err = 0.0;
  for (std::size_t i = 0; i < q_elems; ++i) {
    max_err = std::max(max_err, std::abs(double(__bfloat162float(out[i])) - ref[i]));
  }
  std::printf("max |error| vs float64 reference: %.2e (bf16 output)\n", max_err);
  (void)cudaFree(workspace);
  return max_err < 2e-2 ? 0 : 1;
}
