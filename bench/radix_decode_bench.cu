// Radix (shared-prefix) decode benchmark: bf16, 32 query / 8 kv heads, head_dim 128, block 16.
// Each case is one batch whose sharing structure is known by construction (shared pieces hold
// the same blocks in every sharer's block-table row, placed at random in the pool). Timed:
// radix kernel + merge_states, one launch pair per iteration between CUDA events, L2 flushed
// before each iteration (the batches are near the 50 MB L2); the plan upload happens once,
// outside the timing. Counters: median_us, floor_us (the batch's unique bytes at the read-only
// ceiling measured by this process, bench::measured_read_ceiling_gbps; read_ceiling_gbps), and
// paged_decode on the same batch (full block tables, no sharing). BM_radix_decode_fp8/<case>:
// the shared-prefix cases over an fp8 e4m3 cache (per-head scales); its floor_us is that of the
// fp8 bytes (half).
//
//   ./radix_decode_bench --benchmark_counters_tabular=true
//
// RADIX_ATTENTION_BENCH_RADIX_KERNEL=tma|mma in the environment forces the radix kernel
// (RadixDecodeOptions::kernel; default: chosen by the plan) for comparisons.

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench_support.cuh"
#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "support/radix_plan_from_segments.hpp"

namespace {

using namespace radix_attention;
using bench::DeviceArray;
using bench::fill_random;
using bf16 = __nv_bfloat16;
using fp8 = __nv_fp8_e4m3;

constexpr int kQHeads = 32;
constexpr int kKvHeads = 8;
constexpr int kHeadDim = 128;
constexpr int kBlock = 16;
constexpr std::size_t kFlushBytes = std::size_t{256} << 20;  // > 5x the 50 MB L2

/// A batch: query q's context is the concatenation of pieces `queries[q]`; a piece shared by
/// several queries is one segment (its blocks appear in each sharer's table row).
struct Shape {
  std::vector<int> piece_len;
  std::vector<std::vector<int>> queries;
};

Shape shared_prefix(int n, int shared, int priv) {
  Shape s;
  s.piece_len.push_back(shared);
  for (int q = 0; q < n; ++q) {
    s.piece_len.push_back(priv);
    s.queries.push_back({0, q + 1});
  }
  return s;
}

Shape two_level(int groups, int per_group, int global, int group_len, int priv) {
  Shape s;
  s.piece_len.push_back(global);
  for (int g = 0; g < groups; ++g) {
    const int gid = static_cast<int>(s.piece_len.size());
    s.piece_len.push_back(group_len);
    for (int i = 0; i < per_group; ++i) {
      s.piece_len.push_back(priv);
      s.queries.push_back({0, gid, static_cast<int>(s.piece_len.size()) - 1});
    }
  }
  return s;
}

Shape no_sharing(int n, int len) {
  Shape s;
  for (int q = 0; q < n; ++q) {
    s.piece_len.push_back(len);
    s.queries.push_back({q});
  }
  return s;
}

struct Batch {
  int num_queries = 0, num_blocks = 0, max_blocks = 1;
  std::vector<std::int32_t> tables, lens;
  std::vector<test::RadixSegmentSpec> shared_segments, private_segments;
  double unique_bytes = 0;
};

Batch build(const Shape& shape) {
  Batch b;
  b.num_queries = static_cast<int>(shape.queries.size());
  std::vector<std::vector<std::int32_t>> blocks(shape.piece_len.size());
  for (std::size_t i = 0; i < shape.piece_len.size(); ++i) {
    b.num_blocks += (shape.piece_len[i] + kBlock - 1) / kBlock;
    b.unique_bytes += 2.0 * shape.piece_len[i] * kKvHeads * kHeadDim * sizeof(bf16);
  }
  std::vector<std::int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::mt19937_64 rng(7);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::size_t next = 0;
  for (std::size_t i = 0; i < shape.piece_len.size(); ++i) {
    for (int j = 0; j < (shape.piece_len[i] + kBlock - 1) / kBlock; ++j)
      blocks[i].push_back(pool[next++]);
  }
  for (const auto& pieces : shape.queries) {
    int len = 0;
    for (int id : pieces) len += shape.piece_len[id];
    b.lens.push_back(len);
    b.max_blocks = std::max(b.max_blocks, (len + kBlock - 1) / kBlock);
  }
  b.tables.assign(static_cast<std::size_t>(b.num_queries) * b.max_blocks, 0);
  std::vector<int> holders(shape.piece_len.size(), 0);
  for (const auto& pieces : shape.queries) {
    for (int id : pieces) ++holders[id];
  }
  std::vector<int> seg_of(shape.piece_len.size(), -1);
  for (int q = 0; q < b.num_queries; ++q) {
    int at = 0;
    for (int id : shape.queries[q]) {
      for (std::size_t j = 0; j < blocks[id].size(); ++j) {
        b.tables[static_cast<std::size_t>(q) * b.max_blocks + at / kBlock + j] = blocks[id][j];
      }
      auto& list = holders[id] > 1 ? b.shared_segments : b.private_segments;
      if (shape.piece_len[id] == 0) continue;
      if (seg_of[id] < 0) {
        seg_of[id] = static_cast<int>(list.size());
        list.push_back({q, at, at + shape.piece_len[id], {}});
      }
      list[seg_of[id]].queries.push_back(q);
      at += shape.piece_len[id];
    }
  }
  return b;
}

/// Plan: shared segments cut into chunks of `shared_chunk` tokens, private ones of `private_chunk`
/// (or, with `share` false, every query's whole context as one private segment).
RadixPlan make_plan(const Batch& b, bool share, int shared_chunk, int private_chunk) {
  std::vector<test::RadixSegmentSpec> segs;
  auto add_chunks = [&](const std::vector<test::RadixSegmentSpec>& from, int chunk) {
    const RadixPlan p = test::radix_plan_from_segments(b.num_queries, from, chunk);
    for (int c = 0; c < p.num_chunks(); ++c) {
      test::RadixSegmentSpec s{p.chunk_row[c], p.chunk_token_begin[c], p.chunk_token_end[c], {}};
      s.queries.assign(p.chunk_queries.begin() + p.chunk_query_indptr[c],
                       p.chunk_queries.begin() + p.chunk_query_indptr[c + 1]);
      segs.push_back(s);
    }
  };
  if (share) {
    add_chunks(b.shared_segments, shared_chunk);
    add_chunks(b.private_segments, private_chunk);
  } else {
    std::vector<test::RadixSegmentSpec> whole;
    for (int q = 0; q < b.num_queries; ++q) {
      if (b.lens[q] > 0) whole.push_back({q, 0, b.lens[q], {q}});
    }
    add_chunks(whole, private_chunk);
  }
  return test::radix_plan_from_segments(b.num_queries, segs, 1 << 30);
}

struct Fixture {
  Batch batch;
  DeviceArray<bf16> q, k, v, out;
  DeviceArray<std::int32_t> tables, lens;
  DeviceArray<unsigned char> flush;
  PagedKvCacheView<bf16> cache;
  BlockTableView view;

  explicit Fixture(const Shape& shape)
      : batch(build(shape)),
        q(static_cast<std::size_t>(batch.num_queries) * kQHeads * kHeadDim),
        k(static_cast<std::size_t>(batch.num_blocks) * kBlock * kKvHeads * kHeadDim),
        v(static_cast<std::size_t>(batch.num_blocks) * kBlock * kKvHeads * kHeadDim),
        out(static_cast<std::size_t>(batch.num_queries) * kQHeads * kHeadDim),
        tables(batch.tables),
        lens(batch.lens),
        flush(kFlushBytes) {
    const std::size_t kv =
        static_cast<std::size_t>(batch.num_blocks) * kBlock * kKvHeads * kHeadDim;
    fill_random<<<1024, 256>>>(q.ptr,
                               static_cast<std::size_t>(batch.num_queries) * kQHeads * kHeadDim, 1);
    fill_random<<<1024, 256>>>(k.ptr, kv, 2);
    fill_random<<<1024, 256>>>(v.ptr, kv, 3);
    RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    cache = {k.ptr, v.ptr, batch.num_blocks, kBlock, kKvHeads, kHeadDim};
    view = {tables.ptr,        lens.ptr,
            batch.num_queries, batch.max_blocks,
            batch.max_blocks,  *std::max_element(batch.lens.begin(), batch.lens.end())};
  }
};

void flush_l2(const Fixture& f) {
  RADIX_ATTENTION_CUDA_CHECK(cudaMemsetAsync(f.flush.ptr, 0, kFlushBytes));
}

template <class F>
double timed_loop(benchmark::State& state, const Fixture& f, F&& launch) {
  const double median = bench::timed_median_us(
      state, 3, [&] { flush_l2(f); }, launch);
  const double ceiling = bench::measured_read_ceiling_gbps();
  state.counters["floor_us"] = f.batch.unique_bytes / (ceiling * 1e3);
  state.counters["read_ceiling_gbps"] = ceiling;
  return median;
}

double run_paged(benchmark::State& state, const Fixture& f) {
  const std::size_t ws = paged_decode_workspace_bytes(kQHeads, f.cache, f.view);
  DeviceArray<unsigned char> work(ws);
  return timed_loop(state, f, [&] {
    paged_decode(f.q.ptr, kQHeads, f.cache, f.view, f.out.ptr, nullptr, work.ptr, ws, nullptr);
  });
}

DeviceRadixPlan upload_plan(const Fixture& f, const RadixPlan& plan) {
  DeviceRadixPlan device_plan;
  device_plan.upload(plan, f.batch.lens, kQHeads / kKvHeads, nullptr);
  return device_plan;
}

/// The radix kernel RADIX_ATTENTION_BENCH_RADIX_KERNEL names (tma, mma), else kAuto.
RadixDecodeKernel bench_radix_kernel() {
  const char* name = std::getenv("RADIX_ATTENTION_BENCH_RADIX_KERNEL");
  if (name == nullptr) return RadixDecodeKernel::kAuto;
  if (std::string(name) == "tma") return RadixDecodeKernel::kTma;
  if (std::string(name) == "mma") return RadixDecodeKernel::kMma;
  return RadixDecodeKernel::kAuto;
}

/// A plan uploaded for the fixture's batch, with its workspace; time() runs the benchmark loop
/// of radix_decode over it.
struct RadixRun {
  DeviceRadixPlan device_plan;
  std::size_t ws;
  DeviceArray<unsigned char> work;

  RadixRun(const Fixture& f, const RadixPlan& plan)
      : device_plan(upload_plan(f, plan)),
        ws(radix_decode_workspace_bytes(device_plan, kQHeads, kHeadDim)),
        work(ws) {}

  void time(benchmark::State& state, const Fixture& f) {
    RadixDecodeOptions options;
    options.kernel = bench_radix_kernel();
    timed_loop(state, f, [&] {
      radix_decode(f.q.ptr, kQHeads, f.cache, f.view, device_plan, f.out.ptr, nullptr, work.ptr, ws,
                   nullptr, options);
    });
  }
};

void BM_radix_decode(benchmark::State& state, Shape shape, bool share) {
  const Fixture f(shape);
  const int shared_chunk = static_cast<int>(state.range(0));
  const int private_chunk = static_cast<int>(state.range(1));
  const RadixPlan plan = make_plan(f.batch, share, shared_chunk, private_chunk);
  RadixRun run(f, plan);
  run.time(state, f);
  const DeviceRadixPlan& device_plan = run.device_plan;
  const DeviceArray<unsigned char>& work = run.work;
  // The merge step alone (merge_states on the partials just written).
  const auto* partial_out = reinterpret_cast<const float*>(work.ptr);
  const auto* partial_lse = reinterpret_cast<const float*>(
      work.ptr + detail::radix_align256(static_cast<std::size_t>(device_plan.capacity().partials) *
                                        kQHeads * kHeadDim * sizeof(float)));
  bench::EventTimer timer;
  std::vector<double> merge_times;
  for (int i = 0; i < 21; ++i) {
    flush_l2(f);
    merge_times.push_back(timer.time_us([&] {
      merge_states<bf16>(partial_out, partial_lse, device_plan.num_partials(), kQHeads, kHeadDim,
                         device_plan.query_partial_indptr(), device_plan.query_partials(),
                         device_plan.num_queries(), f.out.ptr, nullptr, nullptr);
    }));
  }
  state.counters["merge_us"] = bench::median(merge_times);
  state.counters["chunks"] = plan.num_chunks();
  state.counters["partials"] = plan.num_partials();
  state.counters["items"] = device_plan.summary().num_items;
}

/// fp8 e4m3 K/V for a fixture's batch (random codes, per-head scales).
struct Fp8Cache {
  DeviceArray<fp8> k, v;
  DeviceArray<float> scales;
  PagedKvCacheView<fp8> cache;

  explicit Fp8Cache(const Fixture& f)
      : k(static_cast<std::size_t>(f.batch.num_blocks) * kBlock * kKvHeads * kHeadDim),
        v(static_cast<std::size_t>(f.batch.num_blocks) * kBlock * kKvHeads * kHeadDim),
        scales(std::vector<float>(kKvHeads, 1.f / 448.f)) {
    const std::size_t kv =
        static_cast<std::size_t>(f.batch.num_blocks) * kBlock * kKvHeads * kHeadDim;
    fill_random<<<1024, 256>>>(k.ptr, kv, 4);
    fill_random<<<1024, 256>>>(v.ptr, kv, 5);
    RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    cache = {k.ptr, v.ptr, f.batch.num_blocks, kBlock, kKvHeads, kHeadDim};
  }
};

/// The shared-prefix cases over an fp8 cache: the same plans as BM_radix_decode.
void BM_radix_decode_fp8(benchmark::State& state, Shape shape) {
  const Fixture f(shape);
  const Fp8Cache c(f);
  const RadixPlan plan =
      make_plan(f.batch, true, static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  const DeviceRadixPlan device_plan = upload_plan(f, plan);
  const std::size_t ws = radix_decode_workspace_bytes(device_plan, kQHeads, kHeadDim);
  DeviceArray<unsigned char> work(ws);
  RadixDecodeOptions options;
  options.kv_scales = {c.scales.ptr, c.scales.ptr, KvScaleMode::kPerHead};
  timed_loop(state, f, [&] {
    radix_decode(f.q.ptr, kQHeads, c.cache, f.view, device_plan, f.out.ptr, nullptr, work.ptr, ws,
                 nullptr, options);
  });
  // timed_loop's floor is that of the bf16 bytes; the fp8 cache holds half of them.
  state.counters["floor_us"] = state.counters["floor_us"].value / 2;
  state.counters["chunks"] = plan.num_chunks();
}

/// The plan the batch planner builds for the batch (what an engine gets), for this device's
/// SMs and PlannerOptions::ctas_per_sm = state.range(0) (0: the default); state.range(1) = 1:
/// a batch-invariant plan (PlannerOptions::deterministic).
void BM_radix_decode_planner(benchmark::State& state, Shape shape) {
  const Fixture f(shape);
  PlannerOptions options;
  options.num_q_heads = kQHeads;
  options.num_kv_heads = kKvHeads;
  options.head_dim = kHeadDim;
  options.num_sms = radix_decode_device_shape<bf16>(kHeadDim).num_sms;
  options.ctas_per_sm = static_cast<std::int32_t>(state.range(0));
  options.deterministic = state.range(1) != 0;
  const BlockTables tables{f.batch.num_queries, f.batch.max_blocks, f.batch.tables, f.batch.lens};
  PlanStats stats;
  const RadixPlan plan = radix_attention::plan(tables, kBlock, options, &stats);
  RadixRun(f, plan).time(state, f);
  state.counters["chunks"] = plan.num_chunks();
  state.counters["chunk_target"] = stats.chunk_target_tokens;
  state.counters["shared_segments"] = stats.num_shared_segments;
}

void BM_paged_decode(benchmark::State& state, Shape shape) {
  const Fixture f(shape);
  run_paged(state, f);
}

void register_all() {
  struct Case {
    const char* name;
    Shape shape;
    std::vector<std::pair<int, int>> chunks;  // (shared chunk, private chunk)
  };
  const std::vector<Case> cases = {
      {"64x(4096+128)", shared_prefix(64, 4096, 128), {{256, 1024}, {512, 1024}, {1024, 1024}}},
      {"256x(2048+64)", shared_prefix(256, 2048, 64), {{256, 1024}, {512, 1024}, {2048, 1024}}},
      {"32x(16384+512)", shared_prefix(32, 16384, 512), {{512, 1024}, {1024, 1024}, {2048, 1024}}},
      {"two_level_8x32x(1024+2048+128)",
       two_level(8, 32, 1024, 2048, 128),
       {{256, 1024}, {512, 1024}}},
  };
  for (const auto& c : cases) {
    auto* rb = benchmark::RegisterBenchmark((std::string("BM_radix_decode/") + c.name).c_str(),
                                            BM_radix_decode, c.shape, true);
    for (auto [s, p] : c.chunks) rb->Args({s, p});
    rb->UseManualTime()->Iterations(100)->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("BM_radix_decode_planner/") + c.name).c_str(),
                                 BM_radix_decode_planner, c.shape)
        ->Args({0, 0})
        ->Args({1, 0})
        ->Args({3, 0})
        ->Args({0, 1})
        ->UseManualTime()
        ->Iterations(100)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("BM_paged_decode/") + c.name).c_str(),
                                 BM_paged_decode, c.shape)
        ->UseManualTime()
        ->Iterations(100)
        ->Unit(benchmark::kMicrosecond);
    if (c.shape.queries.front().size() == 2) {  // S4-S6, the shared-prefix cases
      auto* fb = benchmark::RegisterBenchmark(
          (std::string("BM_radix_decode_fp8/") + c.name).c_str(), BM_radix_decode_fp8, c.shape);
      for (auto [s, p] : c.chunks) fb->Args({s, p});
      fb->UseManualTime()->Iterations(100)->Unit(benchmark::kMicrosecond);
    }
  }
  // Parts of the first case alone: its shared prefix (no private suffix), its private suffixes.
  for (auto [name, shape] : std::vector<std::pair<const char*, Shape>>{
           {"part_shared_64x4096", shared_prefix(64, 4096, 0)},
           {"part_private_64x128", no_sharing(64, 128)}}) {
    benchmark::RegisterBenchmark((std::string("BM_radix_decode/") + name).c_str(), BM_radix_decode,
                                 shape, true)
        ->Args({256, 1024})
        ->Args({512, 1024})
        ->Args({1024, 1024})
        ->UseManualTime()
        ->Iterations(50)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("BM_paged_decode/") + name).c_str(), BM_paged_decode,
                                 shape)
        ->UseManualTime()
        ->Iterations(50)
        ->Unit(benchmark::kMicrosecond);
  }
  // No sharing: the radix kernel on plain decode batches (private segments only).
  const std::vector<std::pair<const char*, Shape>> plain = {{"64x4096", no_sharing(64, 4096)},
                                                            {"16x16384", no_sharing(16, 16384)},
                                                            {"128x1024", no_sharing(128, 1024)}};
  for (const auto& [name, shape] : plain) {
    benchmark::RegisterBenchmark(
        (std::string("BM_radix_decode_planner/no_sharing_") + name).c_str(),
        BM_radix_decode_planner, shape)
        ->Args({0, 0})
        ->Args({0, 1})
        ->UseManualTime()
        ->Iterations(50)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("BM_radix_decode/no_sharing_") + name).c_str(),
                                 BM_radix_decode, shape, false)
        ->Args({0, 1024})
        ->Args({0, 2048})
        ->Args({0, 4096})
        ->UseManualTime()
        ->Iterations(50)
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("BM_paged_decode/no_sharing_") + name).c_str(),
                                 BM_paged_decode, shape)
        ->UseManualTime()
        ->Iterations(50)
        ->Unit(benchmark::kMicrosecond);
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
