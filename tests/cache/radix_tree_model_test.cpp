// Randomized model test of RadixTree: match / insert / lock / unlock / evict against a naive
// model (a map from every cached block-prefix to its block, LRU time and lock count), with
// validate() and a full comparison of the cached contents after every operation.
#include "radix_attention/cache/radix_tree.hpp"

#include <gtest/gtest.h>

#include "cache/radix_tree_model.hpp"

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <utility>
#include <vector>

namespace ra = radix_attention;
using ra::BlockId;
using ra::NodeHandle;
using ra::TokenId;

namespace {

using radix_tree_model::Entry;
using radix_tree_model::Key;
using radix_tree_model::Model;
using radix_tree_model::tree_contents;

struct Client {  // a running request: a locked match whose blocks it retains
  NodeHandle node;
  ra::NamespaceId ns;
  std::vector<TokenId> tokens;
  std::vector<BlockId> blocks;
};

class RadixTreeModelTest : public ::testing::TestWithParam<std::int32_t> {};

INSTANTIATE_TEST_SUITE_P(BlockSizes, RadixTreeModelTest, ::testing::Values(1, 2, 5, 16));

TEST_P(RadixTreeModelTest, RandomOperationsMatchTheNaiveModel) {
  const std::int32_t bs = GetParam();
  constexpr int kOps = 25000;  // x 4 block sizes = 10^5 operations
  ra::BlockAllocator alloc(48);
  ra::RadixTree tree(alloc, bs);
  Model model{bs, {}, 0};
  std::vector<Client> clients;
  std::mt19937 rng(1234 + static_cast<unsigned>(bs));
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };

  // Prompts: one of a few shared bases, cut at a random point, with a random tail from a tiny
  // alphabet so that keys diverge inside edges and inside blocks.
  std::vector<std::vector<TokenId>> bases(3);
  for (auto& b : bases) {
    for (int i = 0; i < 6 * bs; ++i) b.push_back(uniform(0, 3));
  }
  auto random_prompt = [&]() {
    const auto& base = bases[static_cast<std::size_t>(uniform(0, 2))];
    std::vector<TokenId> t(base.begin(), base.begin() + uniform(0, 6 * bs));
    const int tail = uniform(0, 2 * bs);
    for (int i = 0; i < tail; ++i) t.push_back(uniform(0, 2));
    return t;
  };

  int inserts = 0, evicted = 0, max_nodes = 0;
  for (int op = 0; op < kOps; ++op) {
    max_nodes = std::max(max_nodes, tree.num_nodes());
    const int kind = uniform(0, 99);
    const ra::NamespaceId ns = static_cast<ra::NamespaceId>(uniform(0, 1));
    if (kind < 30) {  // match, sometimes keeping the result as a locked client
      const std::vector<TokenId> t = random_prompt();
      const ra::PrefixMatch m = tree.match_prefix(t, ns);
      const std::vector<BlockId> expected = model.match(ns, t);
      ASSERT_EQ(m.blocks, expected);
      ASSERT_EQ(m.num_tokens, static_cast<std::int32_t>(expected.size()) * bs);
      ASSERT_EQ(tree.token_range(m.node).end, m.num_tokens);
      if (uniform(0, 1) == 0 && m.num_tokens > 0) {
        tree.lock(m.node);
        alloc.retain(m.blocks);
        model.add_locks(ns, t, m.blocks.size(), +1);
        clients.push_back({m.node, ns, t, m.blocks});
      }
    } else if (kind < 60) {  // insert: cached blocks passed back retained, or fresh duplicates
      std::vector<TokenId> t = random_prompt();
      t.resize(t.size() / static_cast<std::size_t>(bs) * static_cast<std::size_t>(bs));
      const std::size_t n = t.size() / static_cast<std::size_t>(bs);
      const std::size_t cached = model.cached_prefix(ns, t);
      const bool reuse = uniform(0, 1) == 0;
      const auto fresh_needed = static_cast<std::int32_t>(reuse ? n - cached : n);
      if (fresh_needed > alloc.num_free()) continue;
      std::vector<BlockId> blocks;
      for (std::size_t k = 1; reuse && k <= cached; ++k) {
        blocks.push_back(model.entries.at(model.prefix(ns, t, k)).block);
        alloc.retain(blocks.back());
      }
      alloc.allocate_into(fresh_needed, blocks);
      const std::int32_t free_before = alloc.num_free();
      const ra::InsertResult r = tree.insert(t, blocks, ns);
      ++inserts;
      ASSERT_EQ(r.num_deduplicated, model.insert(ns, t, blocks));
      ASSERT_EQ(r.num_tokens, static_cast<std::int32_t>(t.size()));
      ASSERT_EQ(tree.token_range(r.node).end, r.num_tokens);
      ASSERT_EQ(alloc.num_free(), free_before + (reuse ? 0 : static_cast<std::int32_t>(cached)));
    } else if (kind < 80) {  // a client finishes
      if (clients.empty()) continue;
      const auto i = static_cast<std::size_t>(uniform(0, static_cast<int>(clients.size()) - 1));
      Client c = clients[i];
      clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i));
      tree.unlock(c.node);
      alloc.release(c.blocks);
      model.add_locks(c.ns, c.tokens, c.blocks.size(), -1);
    } else if (kind < 97) {  // evict
      const std::int32_t want = uniform(0, 6);
      const std::int32_t can = model.evictable();
      ASSERT_EQ(tree.evictable_blocks(), can);
      const std::int32_t freed = tree.evict(want);
      evicted += freed;
      ASSERT_GE(freed, std::min(want, can));
      ASSERT_LE(freed, can);
      model.evict(freed);
    } else {  // bad input: nothing may change
      const ra::RadixTreeStats before = tree.stats();
      const std::int32_t free_before = alloc.num_free();
      if (kind == 97) {
        EXPECT_THROW(tree.unlock(tree.root()), ra::StateError);
      } else if (kind == 98) {
        std::vector<TokenId> t(static_cast<std::size_t>(2 * bs), 1);
        EXPECT_THROW(tree.insert(t, {alloc.num_blocks(), 0}), ra::InvalidArgument);
      } else {
        EXPECT_THROW(tree.insert(std::vector<TokenId>(static_cast<std::size_t>(bs) + 1, 0), {0}),
                     ra::InvalidArgument);
      }
      ASSERT_EQ(tree.stats().cached_blocks, before.cached_blocks);
      ASSERT_EQ(tree.stats().num_nodes, before.num_nodes);
      ASSERT_EQ(alloc.num_free(), free_before);
    }
    ASSERT_NO_THROW(tree.validate()) << "after operation " << op;
    const std::map<Key, Entry> actual = tree_contents(tree);
    ASSERT_EQ(actual.size(), model.entries.size()) << "after operation " << op;
    for (const auto& [key, e] : model.entries) {
      const auto it = actual.find(key);
      ASSERT_NE(it, actual.end()) << "after operation " << op;
      ASSERT_EQ(it->second.block, e.block);
      ASSERT_EQ(it->second.locks > 0, e.locks > 0);
    }
    // Clients hold cached (locked) blocks only, so every used block is cached.
    ASSERT_EQ(tree.cached_blocks() + alloc.num_free(), alloc.num_blocks());
  }
  // The run must have exercised the interesting paths, not just empty trees.
  EXPECT_GT(inserts, kOps / 5);
  EXPECT_GT(evicted, kOps / 10);
  EXPECT_GT(max_nodes, 8);
  for (const Client& c : clients) {
    tree.unlock(c.node);
    alloc.release(c.blocks);
  }
  tree.evict(alloc.num_blocks());
  EXPECT_EQ(tree.cached_blocks(), 0);
  EXPECT_EQ(alloc.num_free(), alloc.num_blocks());
  tree.validate();
}

}  // namespace
