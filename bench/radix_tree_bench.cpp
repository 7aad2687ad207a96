// RadixTree host benchmarks. The cache holds 10^4 sequences of 4096 tokens: 100 system prompts
// of kSystemTokens tokens, each followed by 100 users' own tokens. Measures match_prefix and
// insert of one 4096-token prompt at block sizes 1 and 16, and eviction throughput.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"

namespace ra = radix_attention;
using ra::BlockId;
using ra::TokenId;

namespace {

constexpr int kSystemPrompts = 100;
constexpr int kUsersPerPrompt = 100;
constexpr int kPromptTokens = 4096;
constexpr int kSystemTokens = 1024;  // the shared quarter of each prompt
constexpr int kVocab = 32000;

// Token i of stream `seed`: a fixed pseudo-random function, so prompts need not be stored.
TokenId token(std::uint64_t seed, int i) {
  return static_cast<TokenId>(ra::detail::mix64(seed * 1000003u + static_cast<std::uint64_t>(i)) %
                              kVocab);
}

// Prompt of user `user` (may be >= kUsersPerPrompt: a user the cache has never seen).
std::vector<TokenId> prompt(int system, int user) {
  std::vector<TokenId> t(kPromptTokens);
  for (int i = 0; i < kSystemTokens; ++i) t[i] = token(static_cast<std::uint64_t>(system), i);
  const std::uint64_t seed =
      1000000u + static_cast<std::uint64_t>(system) * 100000u + static_cast<std::uint64_t>(user);
  for (int i = kSystemTokens; i < kPromptTokens; ++i) t[i] = token(seed, i);
  return t;
}

struct Cache {
  ra::BlockAllocator alloc;
  ra::RadixTree tree;
  std::vector<ra::NodeHandle> leaves;

  Cache(std::int32_t block_size, std::int32_t spare_blocks)
      : alloc(kSystemPrompts * (kSystemTokens / block_size) +
              kSystemPrompts * kUsersPerPrompt * ((kPromptTokens - kSystemTokens) / block_size) +
              spare_blocks),
        tree(alloc, block_size) {
    std::vector<BlockId> blocks;
    for (int s = 0; s < kSystemPrompts; ++s) {
      for (int u = 0; u < kUsersPerPrompt; ++u) {
        const std::vector<TokenId> t = prompt(s, u);
        // The system part is cached already after the first user: pass the cached blocks back
        // retained, as a finishing sequence does.
        const ra::PrefixMatch m = tree.match_prefix(t);
        blocks = m.blocks;
        alloc.retain(blocks);
        alloc.allocate_into(kPromptTokens / block_size - static_cast<std::int32_t>(blocks.size()),
                            blocks);
        leaves.push_back(tree.insert(t, blocks).node);
      }
    }
    tree.reset_stats();
  }
};

// One cache per block size, shared by the match and insert benchmarks. Its leaves are locked so
// that evict() after each timed insert removes exactly the inserted sequence.
Cache& shared_cache(std::int32_t block_size) {
  static std::map<std::int32_t, std::unique_ptr<Cache>> caches;
  auto& c = caches[block_size];
  if (!c) {
    c = std::make_unique<Cache>(block_size, 2 * kPromptTokens / block_size);
    for (ra::NodeHandle leaf : c->leaves) c->tree.lock(leaf);
  }
  return *c;
}

// Cached prompts in a fixed pseudo-random order (so consecutive matches touch unrelated memory).
std::vector<std::vector<TokenId>> sample_prompts(int n, bool cached_user) {
  std::vector<std::vector<TokenId>> out;
  for (int i = 0; i < n; ++i) {
    const auto h = ra::detail::mix64(static_cast<std::uint64_t>(i));
    const int s = static_cast<int>(h % kSystemPrompts);
    const int u = static_cast<int>((h >> 20) % kUsersPerPrompt);
    out.push_back(prompt(s, cached_user ? u : kUsersPerPrompt + u));
  }
  return out;
}

// match_prefix of a fully cached 4096-token prompt.
void BM_radix_tree_match_hit(benchmark::State& state) {
  const auto bs = static_cast<std::int32_t>(state.range(0));
  Cache& cache = shared_cache(bs);
  const auto prompts = sample_prompts(256, true);
  std::size_t i = 0;
  for (auto _ : state) {
    ra::PrefixMatch m = cache.tree.match_prefix(prompts[i++ % prompts.size()]);
    benchmark::DoNotOptimize(m);
  }
  if (cache.tree.miss_tokens() != 0) state.SkipWithError("expected full hits");
  state.counters["tokens"] = kPromptTokens;
}

// match_prefix of a prompt whose system part (1024 tokens) is cached and user part is not.
void BM_radix_tree_match_partial(benchmark::State& state) {
  const auto bs = static_cast<std::int32_t>(state.range(0));
  Cache& cache = shared_cache(bs);
  const auto prompts = sample_prompts(256, false);
  std::size_t i = 0;
  for (auto _ : state) {
    ra::PrefixMatch m = cache.tree.match_prefix(prompts[i++ % prompts.size()]);
    benchmark::DoNotOptimize(m);
  }
}

// insert of a new user's 4096-token prompt under a cached system prompt: the caller passes the
// system blocks retained (deduplicated) and 3072 tokens of fresh blocks (newly cached). Only
// the insert call is timed; allocation before and evict() after are not.
void BM_radix_tree_insert_new(benchmark::State& state) {
  const auto bs = static_cast<std::int32_t>(state.range(0));
  Cache& cache = shared_cache(bs);
  const auto prompts = sample_prompts(64, false);
  std::vector<BlockId> blocks;
  std::size_t i = 0;
  for (auto _ : state) {
    const std::vector<TokenId>& t = prompts[i++ % prompts.size()];
    blocks = cache.tree.path_blocks(cache.tree.match_prefix(t).node);
    cache.alloc.retain(blocks);
    cache.alloc.allocate_into(kPromptTokens / bs - static_cast<std::int32_t>(blocks.size()),
                              blocks);
    const auto start = std::chrono::steady_clock::now();
    ra::InsertResult r = cache.tree.insert(t, blocks);
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(r);
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    cache.tree.evict(1);  // the new leaf is the only unlocked one
  }
}

// insert of a fully cached 4096-token prompt with the caller's own fresh blocks: every block is
// a duplicate and goes back to the allocator (a finished request whose prompt was cached by a
// concurrent one). Only the insert call is timed.
void BM_radix_tree_insert_duplicate(benchmark::State& state) {
  const auto bs = static_cast<std::int32_t>(state.range(0));
  Cache& cache = shared_cache(bs);
  const auto prompts = sample_prompts(64, true);
  std::vector<BlockId> blocks;
  std::size_t i = 0;
  for (auto _ : state) {
    blocks.clear();
    cache.alloc.allocate_into(kPromptTokens / bs, blocks);
    const auto start = std::chrono::steady_clock::now();
    ra::InsertResult r = cache.tree.insert(prompts[i++ % prompts.size()], blocks);
    const auto stop = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(r);
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
  }
}

// Eviction of the whole cache (10^4 leaves, cascading to the 100 system-prompt nodes), least
// recently used first. Reports blocks and nodes freed per second; the build is not timed.
void BM_radix_tree_evict_all(benchmark::State& state) {
  const auto bs = static_cast<std::int32_t>(state.range(0));
  std::int64_t blocks = 0, nodes = 0;
  for (auto _ : state) {
    Cache cache(bs, 0);
    const std::int32_t num_nodes = cache.tree.num_nodes() - 1;
    const auto start = std::chrono::steady_clock::now();
    const std::int32_t freed = cache.tree.evict(cache.alloc.num_blocks());
    const auto stop = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    if (cache.alloc.num_free() != cache.alloc.num_blocks()) {
      state.SkipWithError("eviction left blocks behind");
    }
    blocks += freed;
    nodes += num_nodes;
  }
  state.counters["blocks_per_s"] =
      benchmark::Counter(static_cast<double>(blocks), benchmark::Counter::kIsRate);
  state.counters["nodes_per_s"] =
      benchmark::Counter(static_cast<double>(nodes), benchmark::Counter::kIsRate);
}

// Per-node eviction cost, without the per-block work: 10^5 one-block leaves (block 16) below
// 1000 two-block inner nodes, evicted in LRU order with cascades. Reports nodes per second.
void BM_radix_tree_evict_small_nodes(benchmark::State& state) {
  constexpr int kInner = 1000, kLeavesPerInner = 100, kBs = 16;
  std::int64_t nodes = 0;
  for (auto _ : state) {
    ra::BlockAllocator alloc(kInner * (2 + kLeavesPerInner));
    ra::RadixTree tree(alloc, kBs);
    std::vector<TokenId> t(3 * kBs);
    for (int i = 0; i < kInner; ++i) {
      for (int j = 0; j < kLeavesPerInner; ++j) {
        for (int k = 0; k < 3 * kBs; ++k) {
          t[static_cast<std::size_t>(k)] =
              k < 2 * kBs
                  ? token(static_cast<std::uint64_t>(i), k)
                  : token(7000000u + static_cast<std::uint64_t>(i * kLeavesPerInner + j), k);
        }
        std::vector<BlockId> blocks = tree.match_prefix(t).blocks;
        alloc.retain(blocks);
        alloc.allocate_into(3 - static_cast<std::int32_t>(blocks.size()), blocks);
        tree.insert(t, blocks);
      }
    }
    const std::int32_t num_nodes = tree.num_nodes() - 1;
    const auto start = std::chrono::steady_clock::now();
    tree.evict(alloc.num_blocks());
    const auto stop = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(stop - start).count());
    if (alloc.num_free() != alloc.num_blocks()) state.SkipWithError("eviction left blocks behind");
    nodes += num_nodes;
  }
  state.counters["nodes_per_s"] =
      benchmark::Counter(static_cast<double>(nodes), benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_radix_tree_match_hit)->ArgName("block")->Arg(16)->Arg(1);
BENCHMARK(BM_radix_tree_match_partial)->ArgName("block")->Arg(16)->Arg(1);
BENCHMARK(BM_radix_tree_insert_new)->ArgName("block")->Arg(16)->Arg(1)->UseManualTime();
BENCHMARK(BM_radix_tree_insert_duplicate)->ArgName("block")->Arg(16)->Arg(1)->UseManualTime();
BENCHMARK(BM_radix_tree_evict_all)
    ->ArgName("block")
    ->Arg(16)
    ->Arg(1)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

BENCHMARK(BM_radix_tree_evict_small_nodes)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
