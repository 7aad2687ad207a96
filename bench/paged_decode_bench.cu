// Paged decode benchmark (bf16, 32 query / 8 kv heads, head_dim 128) against two ceilings
// measured in the same process: a device-to-device copy and a read-only streaming kernel.
// Each timed iteration is one launch bracketed by CUDA events; counters report the median.
// BM_paged_decode_fp8/<case>: the same cases over an fp8 e4m3 cache (per-head scales), GB/s of
// the fp8 bytes (half of bf16's), so pct_read_ceiling is against the fp8 floor.
// BM_paged_decode_float/<case>: float queries and cache (the CUDA-core path), GB/s of the float
// bytes (twice bf16's).
//
//   ./paged_decode_bench --benchmark_counters_tabular=true
//
// RADIX_ATTENTION_BENCH_SPLITS=<n> in the environment forces the split-KV factor (tuning only).

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "bench_support.cuh"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/ops/paged_decode.cuh"

namespace {

using bench::DeviceArray;
using bench::fill_random;
using radix_attention::BlockTableView;
using radix_attention::PagedKvCacheView;
using bf16 = __nv_bfloat16;
using fp8 = __nv_fp8_e4m3;

constexpr int kQHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
double g_read_ceiling_gbps = 0.0;  // set by BM_ceiling/read_only, which runs first

// Reads the K and V rows of every token through the block table, `heads` kv heads at a time
// (heads x 256 contiguous bytes per token), and folds them: the bandwidth of the paged layout's
// access pattern alone, without attention arithmetic. grid = (kv heads / heads, seqs, heads);
// the z dimension splits each context so every variant launches the same number of CTAs.
__global__ void paged_gather(const uint4* k, const uint4* v, const std::int32_t* table,
                             int blocks_per_seq, int ctx, int block_size, int heads,
                             unsigned* sink) {
  const int seq = blockIdx.y;
  const int chunks = heads * kHeadDim / 8;  // 16-byte pieces per token
  const int tokens_per_pass = blockDim.x / chunks;
  const int c = threadIdx.x % chunks;
  const int part = (ctx + gridDim.z - 1) / gridDim.z;
  const int end = min(ctx, (blockIdx.z + 1) * part);
  const std::int32_t* row = table + static_cast<long long>(seq) * blocks_per_seq;
  auto offset = [&](int tok) {
    const long long slot =
        static_cast<long long>(row[tok / block_size]) * block_size + tok % block_size;
    return (slot * kKvHeads + blockIdx.x * heads) * (kHeadDim / 8) + c;
  };
  unsigned acc = 0;
  int tok = blockIdx.z * part + threadIdx.x / chunks;
  for (; tok + 3 * tokens_per_pass < end; tok += 4 * tokens_per_pass) {  // 8 loads in flight
    uint4 x[8];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const long long o = offset(tok + u * tokens_per_pass);
      x[2 * u] = k[o];
      x[2 * u + 1] = v[o];
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) acc ^= x[u].x ^ x[u].y ^ x[u].z ^ x[u].w;
  }
  for (; tok < end; tok += tokens_per_pass) {
    const long long o = offset(tok);
    acc ^= k[o].x ^ v[o].y;
  }
  if (acc == 0x12345678u) *sink = acc;
}

/// Runs the timing loop; sets manual time per iteration and the median-based counters.
template <class F>
void timed_loop(benchmark::State& state, double bytes, F&& launch) {
  const double median = bench::timed_median_us(state, 5, launch);
  state.counters["GB/s"] = bytes / (median * 1e-6) / 1e9;
  if (g_read_ceiling_gbps > 0) {
    state.counters["pct_read_ceiling"] = 100.0 * state.counters["GB/s"] / g_read_ceiling_gbps;
  }
}

constexpr std::size_t kCeilingBytes = std::size_t(1) << 30;

void BM_ceiling_d2d_copy(benchmark::State& state) {
  DeviceArray<unsigned char> src(kCeilingBytes), dst(kCeilingBytes);
  RADIX_ATTENTION_CUDA_CHECK(cudaMemset(src.ptr, 1, kCeilingBytes));
  timed_loop(state, 2.0 * kCeilingBytes, [&] {
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMemcpyAsync(dst.ptr, src.ptr, kCeilingBytes, cudaMemcpyDeviceToDevice));
  });
}

void BM_ceiling_read_only(benchmark::State& state) {
  DeviceArray<unsigned char> src(kCeilingBytes);
  DeviceArray<unsigned> sink(1);
  fill_random<<<1024, 256>>>(reinterpret_cast<bf16*>(src.ptr), kCeilingBytes / 2, 7);
  int sms = 0;
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  timed_loop(state, double(kCeilingBytes), [&] {
    bench::read_stream_kernel<<<sms * 8, 256>>>(reinterpret_cast<const uint4*>(src.ptr),
                                                kCeilingBytes / 16, sink.ptr);
    RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
  });
  g_read_ceiling_gbps = state.counters["GB/s"];
}

/// TKv: the cache element type (bf16; fp8 e4m3 read with bf16 queries and per-head scales; or
/// float, with float queries and outputs: the CUDA-core mainloop).
template <class TKv = bf16>
void BM_paged_decode(benchmark::State& state, int num_seqs, int ctx, int block_size,
                     int gather_heads = 0, bool hnd = false) {
  const int blocks_per_seq = (ctx + block_size - 1) / block_size;
  const int num_blocks = num_seqs * blocks_per_seq;
  const std::size_t kv_elems = std::size_t(num_blocks) * block_size * kKvHeads * kHeadDim;
  DeviceArray<TKv> k(kv_elems), v(kv_elems);
  using TQ = std::conditional_t<std::is_same_v<TKv, float>, float, bf16>;
  DeviceArray<TQ> q(std::size_t(num_seqs) * kQHeads * kHeadDim),
      out(std::size_t(num_seqs) * kQHeads * kHeadDim);
  DeviceArray<float> scales(std::vector<float>(kKvHeads, 1.f / 448.f));
  DeviceArray<float> lse(std::size_t(num_seqs) * kQHeads);
  fill_random<<<4096, 256>>>(k.ptr, kv_elems, 1);
  fill_random<<<4096, 256>>>(v.ptr, kv_elems, 2);
  fill_random<<<256, 256>>>(q.ptr, std::size_t(num_seqs) * kQHeads * kHeadDim, 3);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();

  // Blocks scattered over the whole pool, as after a serving engine has run for a while.
  std::vector<std::int32_t> table(num_blocks);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937_64(42));
  std::vector<std::int32_t> lens(num_seqs, ctx);
  DeviceArray<std::int32_t> d_table(table), d_lens(lens);

  PagedKvCacheView<TKv> cache{k.ptr, v.ptr, num_blocks, block_size, kKvHeads, kHeadDim};
  if (hnd) {  // the same arrays read as [blocks, heads, block, dim] (16-byte-unit slots)
    cache.head_stride = std::int64_t{block_size} * kHeadDim;
    cache.token_stride = kHeadDim;
    cache.block_stride = std::int64_t{kKvHeads} * block_size * kHeadDim;
  }
  BlockTableView tables{d_table.ptr, d_lens.ptr, num_seqs, blocks_per_seq, blocks_per_seq, ctx};
  radix_attention::PagedDecodeOptions options;
  if constexpr (std::is_same_v<TKv, fp8>) {
    options.kv_scales = {scales.ptr, scales.ptr, radix_attention::KvScaleMode::kPerHead};
  }
  if (const char* splits = std::getenv("RADIX_ATTENTION_BENCH_SPLITS")) {
    options.num_splits = std::atoi(splits);
  }
  const std::size_t ws_bytes =
      radix_attention::paged_decode_workspace_bytes(kQHeads, cache, tables, options);
  DeviceArray<unsigned char> ws(std::max<std::size_t>(ws_bytes, 16));
  state.counters["splits"] =
      radix_attention::paged_decode_num_splits(kQHeads, cache, tables, options);
  const double bytes = 2.0 * double(num_seqs) * ctx * kKvHeads * kHeadDim * sizeof(TKv);
  if (std::is_same_v<TKv, bf16> && gather_heads > 0) {
    DeviceArray<unsigned> sink(1);
    const dim3 grid(kKvHeads / gather_heads, num_seqs, gather_heads);
    timed_loop(state, bytes, [&] {
      paged_gather<<<grid, 256>>>(reinterpret_cast<const uint4*>(k.ptr),
                                  reinterpret_cast<const uint4*>(v.ptr), d_table.ptr,
                                  blocks_per_seq, ctx, block_size, gather_heads, sink.ptr);
      RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  timed_loop(state, bytes, [&] {
    radix_attention::paged_decode(q.ptr, kQHeads, cache, tables, out.ptr, lse.ptr, ws.ptr, ws_bytes,
                                  nullptr, options);
  });
}

void register_all() {
  benchmark::RegisterBenchmark("BM_ceiling/read_only", BM_ceiling_read_only)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("BM_ceiling/d2d_copy", BM_ceiling_d2d_copy)
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
  for (int bs : {16, 1}) {
    for (int heads : {1, 2, 8}) {
      const std::string name = "BM_ceiling/paged_gather_b64_ctx4096_bs" + std::to_string(bs) +
                               "_heads" + std::to_string(heads);
      benchmark::RegisterBenchmark(
          name.c_str(), [=](benchmark::State& st) { BM_paged_decode(st, 64, 4096, bs, heads); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  struct Shape {
    int seqs, ctx;
  };
  for (Shape s : {Shape{64, 4096}, Shape{16, 16384}, Shape{128, 1024}}) {
    for (int bs : {16, 1}) {
      const std::string name = "BM_paged_decode/b" + std::to_string(s.seqs) + "_ctx" +
                               std::to_string(s.ctx) + "_bs" + std::to_string(bs);
      benchmark::RegisterBenchmark(
          name.c_str(), [=](benchmark::State& st) { BM_paged_decode(st, s.seqs, s.ctx, bs); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
      // S1-S3 over an fp8 cache: floor = half the bf16 bytes (S1: 119.5 us on the H200).
      benchmark::RegisterBenchmark(
          ("BM_paged_decode_fp8/" + name.substr(name.find('/') + 1)).c_str(),
          [=](benchmark::State& st) { BM_paged_decode<fp8>(st, s.seqs, s.ctx, bs); })
          ->UseManualTime()
          ->Unit(benchmark::kMicrosecond);
    }
  }
  // S1 and S3 in float (full precision: CUDA cores, twice the bytes of bf16).
  for (Shape s : {Shape{64, 4096}, Shape{128, 1024}}) {
    const std::string name = "BM_paged_decode_float/b" + std::to_string(s.seqs) + "_ctx" +
                             std::to_string(s.ctx) + "_bs16";
    benchmark::RegisterBenchmark(
        name.c_str(), [=](benchmark::State& st) { BM_paged_decode<float>(st, s.seqs, s.ctx, 16); })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  // HND layout (block 16: 2 KB runs of one head; block 1 reads as NHD-like slots).
  benchmark::RegisterBenchmark(
      "BM_paged_decode/b64_ctx4096_bs16_hnd",
      [](benchmark::State& st) { BM_paged_decode(st, 64, 4096, 16, 0, true); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
