// Paged prefill / extend benchmark: bf16, 32 query / 8 kv heads, head_dim 128, pages of each
// case placed by a random permutation of the pool. TFLOP/s counts 4 x head_dim x (keys each
// query row sees, summed) x query heads: QK^T and PV, multiply-adds as two operations.
// Each timed iteration is one launch bracketed by CUDA events; counters report the median.
//
//   ./paged_prefill_bench --benchmark_counters_tabular=true

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench_support.cuh"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/ops/paged_prefill.cuh"

namespace {

using bench::DeviceArray;
using bench::fill_random;
using bf16 = __nv_bfloat16;

constexpr int kQHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;

struct PrefillCase {
  int num_requests;
  int q_len;
  int prefix;  // cached tokens before the new ones
  bool causal;
};

void run_prefill(benchmark::State& state, PrefillCase c, int block_size, int q_heads, bool tma) {
  const int kv_len = c.prefix + c.q_len;
  const int blocks_per_seq = (kv_len + block_size - 1) / block_size;
  const int num_blocks = c.num_requests * blocks_per_seq;
  std::vector<std::int32_t> pool(num_blocks), lens(c.num_requests, kv_len), indptr;
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937_64(7));
  for (int s = 0; s <= c.num_requests; ++s) indptr.push_back(s * c.q_len);

  const std::size_t kv_elems = std::size_t(num_blocks) * block_size * kKvHeads * kHeadDim;
  const std::size_t q_elems = std::size_t(c.num_requests) * c.q_len * q_heads * kHeadDim;
  DeviceArray<bf16> k(kv_elems), v(kv_elems), q(q_elems), out(q_elems);
  fill_random<<<1024, 256>>>(k.ptr, kv_elems, 1);
  fill_random<<<1024, 256>>>(v.ptr, kv_elems, 2);
  fill_random<<<1024, 256>>>(q.ptr, q_elems, 3);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
  DeviceArray<std::int32_t> d_table(pool), d_lens(lens), d_indptr(indptr);
  DeviceArray<float> lse(std::size_t(c.num_requests) * c.q_len * q_heads);

  const radix_attention::PagedKvCacheView<bf16> cache{k.ptr,      v.ptr,    num_blocks,
                                                      block_size, kKvHeads, kHeadDim};
  const radix_attention::BlockTableView tables{d_table.ptr,    d_lens.ptr,     c.num_requests,
                                               blocks_per_seq, blocks_per_seq, kv_len};
  const radix_attention::PrefillBatchView batch{d_indptr.ptr, c.num_requests * c.q_len, c.q_len};
  radix_attention::PagedPrefillOptions options;
  options.causal = c.causal;
  options.allow_tma = tma;
  const double med = bench::timed_median_us(state, 3, [&] {
    radix_attention::paged_prefill(q.ptr, q_heads, batch, cache, tables, out.ptr, lse.ptr, nullptr,
                                   options);
  });
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

  double visible = 0;  // keys seen, summed over one request's query rows
  for (int i = 0; i < c.q_len; ++i) visible += c.causal ? c.prefix + i + 1 : kv_len;
  const double flops = 4.0 * kHeadDim * visible * c.num_requests * q_heads;
  state.counters["TFLOPs"] = flops / (med * 1e-6) / 1e12;
  state.counters["block"] = block_size;
}

void register_all() {
  struct Named {
    const char* name;
    PrefillCase c;
    int q_heads;
  };
  // P1-P3 from the issue; "shared_segment" is the shape of a radix-decode shared segment: 64
  // queries x group 4 = 256 rows of one kv head against a 4096-token prefix, no mask.
  const Named cases[] = {{"P1_8x4096_causal", {8, 4096, 0, true}, kQHeads},
                         {"P2_32x512_after_4096", {32, 512, 4096, true}, kQHeads},
                         {"P3_1x16384_causal", {1, 16384, 0, true}, kQHeads},
                         {"shared_segment_256x4096", {1, 64, 4032, false}, kQHeads}};
  for (const Named& n : cases) {
    // block 16 (TMA-fed on an sm_90a build), block 16 with the cp.async gathers, block 1.
    const std::pair<int, bool> variants[] = {{16, true}, {16, false}, {1, true}};
    for (const auto& [bs, tma] : variants) {
      const std::string name = std::string("BM_paged_prefill/") + n.name + "/block" +
                               std::to_string(bs) + (tma ? "" : "_gathered");
      benchmark::RegisterBenchmark(name.c_str(),
                                   [n, bs = bs, tma = tma](benchmark::State& st) {
                                     run_prefill(st, n.c, bs, n.q_heads, tma);
                                   })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
