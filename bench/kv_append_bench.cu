// kv_append benchmark (bf16 input, 8 kv heads, head_dim 128, block size 16): a prefill append
// of 32768 tokens (134 MB read + 134 MB (bf16) or 67 MB (fp8) written, far beyond the 50 MB L2)
// and a 256-token decode step, each into a bf16 and an fp8 e4m3 cache, at slots drawn as a
// random permutation of a pool twice the needed size. Counters: GB/s (bytes read + written,
// slot mapping included), median_us, and pct_copy_ceiling against a cudaMemcpyAsync moving
// the same read + write bytes, measured in the same process (BM_kv_append/ceiling_copy_*).
// These cases time one launch per CUDA-event pair, so a decode step's figure includes the host
// launch and the event overhead, not just the kernel.
//
// The *_graph64_* cases time the decode step as an engine runs it: kGraphLayers appends (one
// per layer) captured into one CUDA graph, per-append time = replay time / kGraphLayers
// (median of kGraphReplays replays after 10 warm-ups). *_graph64_layers: each append has its own
// input rows, slot mapping and cache (a pool of kLayerPoolBlocks blocks, one token per block as a
// decode step of 256 sequences writes), so a replay touches 64 x 2 MB (bf16) > L2 and the rows come
// from HBM. *_graph64_same: the same append 64 times, its 2 MB L2-resident: the back-to-back
// floor. BM_kv_append/graph64_empty_kernel: 64 empty kernels of the bf16 append's grid, the
// graph's own per-launch cost; the append cases report over_empty_us against it.
//
//   ./kv_append_bench --benchmark_counters_tabular=true
//   ./kv_append_bench --benchmark_counters_tabular=true --benchmark_filter=graph64

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
constexpr int kDecodeTokens = 256;
/// Appends per captured graph: one decode step of a 64-layer model.
constexpr int kGraphLayers = 64;
/// Timed replays per graph case (after 10 warm-ups): 2000 x 64 appends, well under a second.
constexpr int kGraphReplays = 2000;
/// Blocks per layer's pool in the *_graph64_layers cases: 32768 slots, 64 MB per K (bf16), so
/// a step's 256 tokens land in 256 blocks scattered over 128 MB of K and V per layer, 8 GB over
/// all layers (fits an 80 GB H100).
constexpr int kLayerPoolBlocks = 2048;
std::map<int, double> g_copy_ceiling_gbps;  // by token count, set by the ceiling runs first
double g_empty_graph_us = 0;  // per launch, set by BM_kv_append/graph64_empty_kernel first

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

__global__ void empty_kernel() {}

/// The graph's own cost per launch: kGraphLayers empty kernels of the bf16 decode append's
/// launch shape (a row of 256 packets: 256 CTAs of 256 threads, one token each).
void BM_empty_graph(benchmark::State& state) {
  const bench::CapturedGraph graph([](cudaStream_t stream) {
    for (int l = 0; l < kGraphLayers; ++l) {
      empty_kernel<<<kDecodeTokens, 256, 0, stream>>>();
      RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    }
  });
  g_empty_graph_us = bench::timed_graph_median_us(state, 10, graph, kGraphLayers);
}

/// One layer's decode append: its input rows, slots and cache view.
template <class TCache>
struct LayerAppend {
  radix_attention::KvAppendInput<bf16> input;
  const std::int32_t* slots;
  radix_attention::PagedKvCacheMutView<TCache> cache;
};

/// kGraphLayers decode appends captured into one graph. distinct: each layer's own input,
/// slots (256 distinct blocks of its pool, a random offset in each) and cache; otherwise
/// layer 0's append every time.
template <class TCache>
void BM_kv_append_graph(benchmark::State& state, bool distinct) {
  const int layers = distinct ? kGraphLayers : 1;
  const std::size_t row = std::size_t(kKvHeads) * kHeadDim;
  const std::size_t input_elems = 2 * std::size_t(kDecodeTokens) * row;
  const std::size_t pool = std::size_t(kLayerPoolBlocks) * kBlockSize * row;
  DeviceArray<bf16> input(layers * input_elems);
  DeviceArray<TCache> k(layers * pool), v(layers * pool);
  bench::fill_random<<<1024, 256>>>(input.ptr, layers * input_elems, 11);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();

  std::mt19937_64 rng(42);
  std::vector<std::int32_t> blocks(kLayerPoolBlocks), slots;
  std::iota(blocks.begin(), blocks.end(), 0);
  for (int l = 0; l < layers; ++l) {
    std::shuffle(blocks.begin(), blocks.end(), rng);
    for (int t = 0; t < kDecodeTokens; ++t) {
      slots.push_back(blocks[t] * kBlockSize + static_cast<std::int32_t>(rng() % kBlockSize));
    }
  }
  DeviceArray<std::int32_t> d_slots(slots);
  DeviceArray<float> scales(std::vector<float>(kKvHeads, 1.f / 64.f));
  radix_attention::KvAppendOptions options;
  if constexpr (std::is_same_v<TCache, fp8>) {
    options.scales = {scales.ptr, scales.ptr, radix_attention::KvScaleMode::kPerHead};
  }

  std::vector<LayerAppend<TCache>> appends;
  for (int l = 0; l < kGraphLayers; ++l) {
    const int src = l % layers;
    const bf16* in = input.ptr + src * input_elems;
    appends.push_back({{in, in + kDecodeTokens * row, kDecodeTokens},
                       d_slots.ptr + src * kDecodeTokens,
                       {k.ptr + src * pool, v.ptr + src * pool, kLayerPoolBlocks, kBlockSize,
                        kKvHeads, kHeadDim}});
  }
  const bench::CapturedGraph graph([&](cudaStream_t stream) {
    for (const LayerAppend<TCache>& a : appends) {
      radix_attention::kv_append(a.input, a.slots, a.cache, stream, options);
    }
  });
  const double us = bench::timed_graph_median_us(state, 10, graph, kGraphLayers);
  state.counters["GB/s"] = append_bytes<TCache>(kDecodeTokens) / (us * 1e-6) / 1e9;
  if (g_empty_graph_us > 0) state.counters["over_empty_us"] = us - g_empty_graph_us;
}

void register_all() {
  auto add = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
  };
  for (int tokens : {32768, kDecodeTokens}) {
    const std::string shape = case_name(tokens) + "_" + std::to_string(tokens) + "x" +
                              std::to_string(kKvHeads) + "x" + std::to_string(kHeadDim);
    add("BM_kv_append/ceiling_copy_" + shape,
        [=](benchmark::State& st) { BM_ceiling_copy(st, tokens); });
    add("BM_kv_append/" + shape + "_bf16",
        [=](benchmark::State& st) { BM_kv_append<bf16>(st, tokens); });
    add("BM_kv_append/" + shape + "_fp8",
        [=](benchmark::State& st) { BM_kv_append<fp8>(st, tokens); });
  }
  // Graph cases: a fixed replay count. Their manual time is per append (replay / 64), so
  // Google Benchmark's default minimum time would ask for 64x the replays (tens of seconds).
  auto add_graph = [](const std::string& name, auto fn) {
    benchmark::RegisterBenchmark(name.c_str(), fn)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond)
        ->Iterations(kGraphReplays);
  };
  const std::string decode = "decode_" + std::to_string(kDecodeTokens) + "x" +
                             std::to_string(kKvHeads) + "x" + std::to_string(kHeadDim);
  const std::string graph = "graph" + std::to_string(kGraphLayers);
  add_graph("BM_kv_append/" + graph + "_empty_kernel", BM_empty_graph);
  for (bool distinct : {true, false}) {
    const std::string which = "_" + graph + (distinct ? "_layers" : "_same");
    add_graph("BM_kv_append/" + decode + "_bf16" + which,
              [=](benchmark::State& st) { BM_kv_append_graph<bf16>(st, distinct); });
    add_graph("BM_kv_append/" + decode + "_fp8" + which,
              [=](benchmark::State& st) { BM_kv_append_graph<fp8>(st, distinct); });
  }
}

// Registered before BENCHMARK_MAIN's main parses the command line.
const bool g_registered = (register_all(), true);

}  // namespace

BENCHMARK_MAIN();
