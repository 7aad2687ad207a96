// kv_append benchmark (bf16 input, 8 kv heads, head_dim 128, block size 16): a prefill append
// of 32768 tokens (134 MB read + 134 MB (bf16) or 67 MB (fp8) written, far beyond the 50 MB L2)
// and a 256-token decode step, each into a bf16 and an fp8 e4m3 cache, at slots drawn as a
// random permutation of a pool twice the needed size. Counters: GB/s (bytes read + written,
// slot mapping included), median_us, and pct_copy_ceiling against a cudaMemcpyAsync moving
// the same read + write bytes, measured in the same process (BM_kv_append/ceiling_copy_*).
//
//   ./kv_append_bench --benchmark_counters_tabular=true

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_support.cuh"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/ops/kv_append.cuh"

namespace {

using bench::DeviceArray;
using bf16 = __nv_bfloat16;
using fp8 = __nv_fp8_e4m3;

constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kBlockSize = 16;
std::map<int, double> g_copy_ceiling_gbps;  // by token count, set by the ceiling runs first

std::string case_name(int tokens) { return tokens >= 4096 ? "prefill" : "decode"; }

/// Bytes one append moves: the K and V rows read, the slot mapping, the rows written.
template <class TCache>
double append_bytes(int tokens) {
  const double elems = 2.0 * tokens * kKvHeads * kHeadDim;
  return elems * sizeof(bf16) + 4.0 * tokens + elems * sizeof(TCache);
}

/// The copy ceiling for the bf16 -> bf16 bytes of `tokens`: half read, half written.
void BM_ceiling_copy(benchmark::State& state, int tokens) {
  const std::size_t bytes = static_cast<std::size_t>(append_bytes<bf16>(tokens) / 2);
  DeviceArray<unsigned char> src(bytes), dst(bytes);
  RADIX_ATTENTION_CUDA_CHECK(cudaMemset(src.ptr, 1, bytes));
  const double us = bench::timed_median_us(state, 5, [&] {
    RADIX_ATTENTION_CUDA_CHECK(cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice));
  });
  g_copy_ceiling_gbps[tokens] = 2.0 * bytes / (us * 1e-6) / 1e9;
  state.counters["GB/s"] = g_copy_ceiling_gbps[tokens];
}

template <class TCache>
void BM_kv_append(benchmark::State& state, int tokens) {
  const std::size_t row = std::size_t(kKvHeads) * kHeadDim;
  const int num_blocks = 2 * ((tokens + kBlockSize - 1) / kBlockSize);
  const std::size_t pool = std::size_t(num_blocks) * kBlockSize * row;
  DeviceArray<bf16> input(2 * tokens * row);
  DeviceArray<TCache> k(pool), v(pool);
  bench::fill_random<<<1024, 256>>>(input.ptr, 2 * tokens * row, 11);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();

  std::vector<std::int32_t> slots(std::size_t(num_blocks) * kBlockSize);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), std::mt19937_64(42));
  slots.resize(tokens);
  DeviceArray<std::int32_t> d_slots(slots);

  const radix_attention::KvAppendInput<bf16> in{input.ptr, input.ptr + tokens * row, tokens};
  const radix_attention::PagedKvCacheMutView<TCache> cache{k.ptr,      v.ptr,    num_blocks,
                                                           kBlockSize, kKvHeads, kHeadDim};
  radix_attention::KvAppendOptions options;
  // Per-head scales in device memory, as an engine keeps them (read by every launch).
  DeviceArray<float> scales(std::vector<float>(kKvHeads, 1.f / 64.f));
  if constexpr (std::is_same_v<TCache, fp8>) {
    options.scales = {scales.ptr, scales.ptr, radix_attention::KvScaleMode::kPerHead};
  }
  const double us = bench::timed_median_us(
      state, 10, [&] { radix_attention::kv_append(in, d_slots.ptr, cache, nullptr, options); });
  const double gbps = append_bytes<TCache>(tokens) / (us * 1e-6) / 1e9;
  state.counters["GB/s"] = gbps;
  if (g_copy_ceiling_gbps.count(tokens) != 0) {
    state.counters["pct_copy_ceiling"] = 100.0 * gbps / g_copy_ceiling_gbps[tokens];
  }
}

void register_all() {
  auto add = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (int tokens : {32768, 256}) {
    const std::string shape = case_name(tokens) + "_" + std::to_string(tokens) + "x" +
                              std::to_string(kKvHeads) + "x" + std::to_string(kHeadDim);
    add("BM_kv_append/ceiling_copy_" + shape,
        [=](benchmark::State& st) { BM_ceiling_copy(st, tokens); });
    add("BM_kv_append/" + shape + "_bf16",
        [=](benchmark::State& st) { BM_kv_append<bf16>(st, tokens); });
    add("BM_kv_append/" + shape + "_fp8",
        [=](benchmark::State& st) { BM_kv_append<fp8>(st, tokens); });
  }
}

// Registered before BENCHMARK_MAIN's main parses the command line.
const bool g_registered = (register_all(), true);

}  // namespace

BENCHMARK_MAIN();
