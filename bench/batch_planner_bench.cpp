// Host cost of planning one decode batch (BM_batch_planner/<case>): block trie, sharing
// decision, chunking and plan arrays; plus the batch fingerprint alone.
// Cases follow the radix-decode benchmark's batches (bf16, 32 q / 8 kv heads, head_dim 128).

#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"

namespace ra = radix_attention;

namespace {

struct Tables {
  std::int32_t block_size = 16;
  std::int32_t num_seqs = 0;
  std::int32_t stride = 0;
  std::vector<std::int32_t> table;
  std::vector<std::int32_t> lens;
  ra::HostBlockTableView view() const {
    return {block_size, num_seqs, stride, table.data(), lens.data()};
  }
};

// groups x per_group requests: `global` tokens shared by all, `group` tokens per group,
// `own` private tokens per request (block ids: shared ones first, then fresh ones).
Tables make_batch(std::int32_t groups, std::int32_t per_group, std::int32_t global,
                  std::int32_t group, std::int32_t own, std::int32_t bs) {
  Tables t;
  t.block_size = bs;
  t.num_seqs = groups * per_group;
  const std::int32_t ctx = global + group + own;
  t.stride = (ctx + bs - 1) / bs;
  t.table.assign(static_cast<std::size_t>(t.num_seqs) * static_cast<std::size_t>(t.stride), -1);
  t.lens.assign(static_cast<std::size_t>(t.num_seqs), ctx);
  std::int32_t next = 0;
  const std::int32_t global_blocks = global / bs;
  const std::int32_t group_blocks = group / bs;
  const std::int32_t first_group = next + global_blocks;
  next = first_group + groups * group_blocks;
  for (std::int32_t s = 0; s < t.num_seqs; ++s) {
    std::int32_t* row = t.table.data() + static_cast<std::ptrdiff_t>(s) * t.stride;
    const std::int32_t g = s / per_group;
    std::int32_t b = 0;
    for (; b < global_blocks; ++b) row[b] = b;
    for (std::int32_t i = 0; i < group_blocks; ++i, ++b)
      row[b] = first_group + g * group_blocks + i;
    for (; b < t.stride; ++b) row[b] = next++;
  }
  return t;
}

void run_plan(benchmark::State& state, const Tables& t) {
  const ra::HostBlockTableView v = t.view();
  std::int64_t partials = 0;
  for (auto _ : state) {
    ra::RadixPlan plan = ra::plan(v);
    partials = plan.num_partials();
    benchmark::DoNotOptimize(plan);
  }
  state.counters["entries"] = static_cast<double>(t.table.size());
  state.counters["partials"] = static_cast<double>(partials);
}

void BM_batch_planner_private_256x2048(benchmark::State& s) {
  run_plan(s, make_batch(1, 256, 0, 0, 2048, 16));
}
void BM_batch_planner_shared_256x2048_64(benchmark::State& s) {
  run_plan(s, make_batch(1, 256, 2048, 0, 64, 16));
}
void BM_batch_planner_shared_64x4096_128(benchmark::State& s) {
  run_plan(s, make_batch(1, 64, 4096, 0, 128, 16));
}
void BM_batch_planner_shared_32x16384_512(benchmark::State& s) {
  run_plan(s, make_batch(1, 32, 16384, 0, 512, 16));
}
void BM_batch_planner_two_level_8x32(benchmark::State& s) {
  run_plan(s, make_batch(8, 32, 1024, 2048, 128, 16));
}
void BM_batch_planner_shared_256x2048_64_block1(benchmark::State& s) {
  run_plan(s, make_batch(1, 256, 2048, 0, 64, 1));
}

void BM_batch_planner_fingerprint_256x2048(benchmark::State& state) {
  const Tables t = make_batch(1, 256, 2048, 0, 64, 16);
  for (auto _ : state) benchmark::DoNotOptimize(ra::fingerprint_batch(t.view()));
}

}  // namespace

BENCHMARK(BM_batch_planner_private_256x2048)
    ->Name("BM_batch_planner/private_256x2048")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_shared_256x2048_64)
    ->Name("BM_batch_planner/shared_256x(2048+64)")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_shared_64x4096_128)
    ->Name("BM_batch_planner/shared_64x(4096+128)")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_shared_32x16384_512)
    ->Name("BM_batch_planner/shared_32x(16384+512)")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_two_level_8x32)
    ->Name("BM_batch_planner/two_level_8x32x(1024+2048+128)")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_shared_256x2048_64_block1)
    ->Name("BM_batch_planner/shared_256x(2048+64)_block1")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_fingerprint_256x2048)
    ->Name("BM_batch_planner/fingerprint_256x2112")
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
