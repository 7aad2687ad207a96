// Host cost of planning one decode batch (BM_batch_planner/<case>).
// - <case>: the stateless plan(), from scratch: block trie, sharing decision, chunking, plan
//   arrays (and the batch fingerprint alone);
// - step_<case>: the stateful BatchPlanner in a decode loop's steady state: every iteration
//   appends one token to every request (a new block id where a block fills) and plans the
//   step; only the plan() call is timed. Rows restart from their initial length every
//   kStepWindow steps, outside the timing, so the batch stays at its nominal shape.
// Cases follow the radix-decode benchmark's batches (bf16, 32 q / 8 kv heads, head_dim 128,
// 132 SMs).

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/sequence_manager.hpp"

namespace ra = radix_attention;

namespace {

constexpr std::int32_t kStepWindow = 64;  // steps before the rows restart (the "+ own" part grows
                                          // by at most 64 tokens: 3 % of the 2048-token prefix)

struct Tables {
  std::int32_t block_size = 16;
  std::int32_t num_seqs = 0;
  std::int32_t stride = 0;
  std::int32_t next_block = 0;
  std::vector<std::int32_t> table;
  std::vector<std::int32_t> lens;
  ra::BlockTableView view() const {
    return {table.data(), lens.data(), num_seqs, stride, stride, -1};
  }
};

// groups x per_group requests: `global` tokens shared by all, `group` tokens per group,
// `own` private tokens per request (block ids: shared ones first, then fresh ones); rows have
// room for `room` more tokens.
Tables make_batch(std::int32_t groups, std::int32_t per_group, std::int32_t global,
                  std::int32_t group, std::int32_t own, std::int32_t bs, std::int32_t room = 0) {
  Tables t;
  t.block_size = bs;
  t.num_seqs = groups * per_group;
  const std::int32_t ctx = global + group + own;
  const std::int32_t used = (ctx + bs - 1) / bs;
  t.stride = (ctx + room + bs - 1) / bs;
  t.table.assign(static_cast<std::size_t>(t.num_seqs) * static_cast<std::size_t>(t.stride), -1);
  t.lens.assign(static_cast<std::size_t>(t.num_seqs), ctx);
  const std::int32_t global_blocks = global / bs;
  const std::int32_t group_blocks = group / bs;
  const std::int32_t first_group = global_blocks;
  std::int32_t next = first_group + groups * group_blocks;
  for (std::int32_t s = 0; s < t.num_seqs; ++s) {
    std::int32_t* row = t.table.data() + static_cast<std::ptrdiff_t>(s) * t.stride;
    const std::int32_t g = s / per_group;
    std::int32_t b = 0;
    for (; b < global_blocks; ++b) row[b] = b;
    for (std::int32_t i = 0; i < group_blocks; ++i, ++b)
      row[b] = first_group + g * group_blocks + i;
    for (; b < used; ++b) row[b] = next++;
  }
  t.next_block = next;
  return t;
}

ra::PlannerOptions reference_options() {
  ra::PlannerOptions o;  // the defaults: 32 q / 8 kv heads, head_dim 128, bf16, 132 SMs
  return o;
}

void run_plan(benchmark::State& state, const Tables& t) {
  const ra::BlockTableView v = t.view();
  std::int64_t partials = 0;
  for (auto _ : state) {
    ra::RadixPlan plan = ra::plan(v, t.block_size, reference_options());
    partials = plan.num_partials();
    benchmark::DoNotOptimize(plan);
  }
  state.counters["entries"] = static_cast<double>(t.table.size());
  state.counters["partials"] = static_cast<double>(partials);
}

// The steady state of a decode loop through BatchPlanner (see the file comment).
void run_steps(benchmark::State& state, const Tables& initial) {
  const ra::PlannerOptions o = reference_options();
  ra::BatchPlanner planner(
      ra::ModelShape{o.num_q_heads, o.num_kv_heads, o.head_dim, o.kv_element_bytes},
      ra::DeviceShape{o.num_sms, o.ctas_per_sm});
  std::vector<std::int64_t> keys(static_cast<std::size_t>(initial.num_seqs));
  std::int64_t next_key = 0;
  Tables t = initial;
  std::int32_t step = 0;
  std::int64_t partials = 0;
  const auto restart = [&] {
    t = initial;
    for (auto& k : keys) k = next_key++;  // new requests of the same shape
    planner.plan(t.view(), t.block_size, keys.data());
  };
  restart();
  for (auto _ : state) {
    if (step == kStepWindow) {
      restart();
      step = 0;
    }
    ++step;
    const std::int32_t bs = t.block_size;
    for (std::int32_t s = 0; s < t.num_seqs; ++s) {
      std::int32_t& len = t.lens[static_cast<std::size_t>(s)];
      if (len % bs == 0) {
        t.table[static_cast<std::size_t>(s) * static_cast<std::size_t>(t.stride) +
                static_cast<std::size_t>(len / bs)] = t.next_block++;
      }
      ++len;
    }
    const auto start = std::chrono::steady_clock::now();
    const ra::RadixPlan& plan = planner.plan(t.view(), bs, keys.data());
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(plan);
    partials = plan.num_partials();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
  state.counters["partials"] = static_cast<double>(partials);
  state.counters["trie_nodes"] = static_cast<double>(planner.num_cached_nodes());
}

// The same steady state through SequenceManager (plan(manager, seqs)): `n` requests forked
// from one `shared`-token prompt, each with `own` tokens of its own.
void run_manager_steps(benchmark::State& state, std::int32_t n, std::int32_t shared,
                       std::int32_t own, std::int32_t bs) {
  const ra::PlannerOptions o = reference_options();
  ra::BatchPlanner planner(
      ra::ModelShape{o.num_q_heads, o.num_kv_heads, o.head_dim, o.kv_element_bytes},
      ra::DeviceShape{o.num_sms, o.ctas_per_sm});
  ra::BlockAllocator allocator(n * ((own + kStepWindow) / bs + 2) + shared / bs + 2);
  ra::SequenceManager manager(allocator, bs);
  std::vector<ra::SequenceId> seqs;
  const auto restart = [&] {
    for (ra::SequenceId s : seqs) manager.release(s);
    seqs.clear();
    const ra::SequenceId prompt = manager.create(shared);
    for (std::int32_t i = 0; i < n; ++i) {
      seqs.push_back(manager.fork(prompt).child);
      manager.append(seqs.back(), own);
    }
    manager.release(prompt);
    planner.plan(manager, seqs);
  };
  restart();
  std::int32_t step = 0;
  for (auto _ : state) {
    if (step == kStepWindow) {
      restart();
      step = 0;
    }
    ++step;
    for (ra::SequenceId s : seqs) manager.append(s, 1);
    const auto start = std::chrono::steady_clock::now();
    const ra::RadixPlan& plan = planner.plan(manager, seqs);
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(plan);
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
  for (ra::SequenceId s : seqs) manager.release(s);
  state.counters["trie_nodes"] = static_cast<double>(planner.num_cached_nodes());
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
  for (auto _ : state) benchmark::DoNotOptimize(ra::fingerprint_batch(t.view(), t.block_size));
}

void BM_batch_planner_step_shared_256x2048_64(benchmark::State& s) {
  run_steps(s, make_batch(1, 256, 2048, 0, 64, 16, kStepWindow));
}
void BM_batch_planner_step_shared_256x2048_64_block1(benchmark::State& s) {
  run_steps(s, make_batch(1, 256, 2048, 0, 64, 1, kStepWindow));
}
void BM_batch_planner_step_private_256x2048(benchmark::State& s) {
  run_steps(s, make_batch(1, 256, 0, 0, 2048, 16, kStepWindow));
}
void BM_batch_planner_step_two_level_8x32(benchmark::State& s) {
  run_steps(s, make_batch(8, 32, 1024, 2048, 128, 16, kStepWindow));
}
void BM_batch_planner_manager_step_shared_256x2048_64(benchmark::State& s) {
  run_manager_steps(s, 256, 2048, 64, 16);
}
void BM_batch_planner_manager_step_shared_256x2048_64_block1(benchmark::State& s) {
  run_manager_steps(s, 256, 2048, 64, 1);
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
BENCHMARK(BM_batch_planner_step_shared_256x2048_64)
    ->Name("BM_batch_planner/step_shared_256x(2048+64)")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_step_shared_256x2048_64_block1)
    ->Name("BM_batch_planner/step_shared_256x(2048+64)_block1")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_step_private_256x2048)
    ->Name("BM_batch_planner/step_private_256x2048")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_step_two_level_8x32)
    ->Name("BM_batch_planner/step_two_level_8x32x(1024+2048+128)")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_manager_step_shared_256x2048_64)
    ->Name("BM_batch_planner/manager_step_shared_256x(2048+64)")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_batch_planner_manager_step_shared_256x2048_64_block1)
    ->Name("BM_batch_planner/manager_step_shared_256x(2048+64)_block1")
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_MAIN();
