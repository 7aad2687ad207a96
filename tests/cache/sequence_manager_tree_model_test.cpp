// Randomized model test of SequenceManager with a RadixTree: add / append_tokens / append /
// fork / finish / abort / evict against a naive model (the prefix map of radix_tree_model.hpp
// plus each sequence's tokens and blocks), with tree.validate(), the cache contents, every
// block's reference count and every sequence's block list compared after each operation.
#include "radix_attention/cache/sequence_manager.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <random>
#include <vector>

#include "cache/radix_tree_model.hpp"

namespace ra = radix_attention;
using ra::BlockId;
using ra::SequenceId;
using ra::TokenId;
using radix_tree_model::Entry;
using radix_tree_model::Key;
using radix_tree_model::Model;

namespace {

struct ModelSeq {
  ra::NamespaceId ns = 0;
  std::vector<TokenId> tokens;  // ids known so far
  bool complete = true;
  std::int32_t len = 0;
  std::vector<BlockId> blocks;
  std::vector<TokenId> prefix_tokens;  // key of the locked prefix
  std::size_t prefix_blocks = 0;
};

class SequenceManagerTreeModelTest : public ::testing::TestWithParam<std::int32_t> {};

INSTANTIATE_TEST_SUITE_P(BlockSizes, SequenceManagerTreeModelTest, ::testing::Values(1, 3, 8));

TEST_P(SequenceManagerTreeModelTest, RandomOperationsMatchTheNaiveModel) {
  const std::int32_t bs = GetParam();
  constexpr int kOps = 34000;  // x 3 block sizes > 10^5 operations
  ra::BlockAllocator alloc(24);
  ra::RadixTree tree(alloc, bs);
  ra::SequenceManager mgr(alloc, tree);
  Model model{bs, {}, 0};
  std::map<SequenceId, ModelSeq> seqs;
  std::mt19937 rng(99 + static_cast<unsigned>(bs));
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<std::vector<TokenId>> bases(3);
  for (auto& b : bases) {
    for (int i = 0; i < 5 * bs; ++i) b.push_back(uniform(0, 3));
  }
  auto random_prompt = [&]() {
    const auto& base = bases[static_cast<std::size_t>(uniform(0, 2))];
    std::vector<TokenId> t(base.begin(), base.begin() + uniform(0, 5 * bs));
    const int tail = uniform(0, 2 * bs);
    for (int i = 0; i < tail; ++i) t.push_back(uniform(0, 2));
    return t;
  };
  auto random_seq = [&]() {
    auto it = seqs.begin();
    std::advance(it, uniform(0, static_cast<int>(seqs.size()) - 1));
    return it->first;
  };
  auto seq_holders = [&](BlockId b) {
    int n = 0;
    for (const auto& [id, s] : seqs)
      n += static_cast<int>(std::count(s.blocks.begin(), s.blocks.end(), b));
    return n;
  };
  auto removed_since = [&](std::int32_t cached_before) {
    return cached_before - tree.cached_blocks();  // eviction may free fewer (shared blocks)
  };
  int adds = 0, finishes = 0, capacity_errors = 0, evicting_adds = 0;

  for (int op = 0; op < kOps; ++op) {
    const int kind = uniform(0, 99);
    if (kind < 28) {  // add
      if (seqs.size() >= 6) continue;
      const ra::NamespaceId ns = static_cast<ra::NamespaceId>(uniform(0, 1));
      const std::vector<TokenId> prompt = random_prompt();
      const std::vector<TokenId> lookup(prompt.begin(), prompt.end() - (prompt.empty() ? 0 : 1));
      const std::size_t k = model.cached_prefix(ns, lookup);
      const auto need = static_cast<std::int32_t>(
          (prompt.size() + static_cast<std::size_t>(bs) - 1) / static_cast<std::size_t>(bs) - k);
      // Unlocked entries outside the matched prefix that no sequence holds: what eviction frees.
      std::int32_t freeable = 0;
      for (const auto& [key, e] : model.entries) {
        if (e.locks != 0) continue;
        const bool in_prefix = key.first == ns &&
                               key.second.size() <= k * static_cast<std::size_t>(bs) &&
                               std::equal(key.second.begin(), key.second.end(), lookup.begin());
        if (in_prefix) continue;
        freeable += seq_holders(e.block) == 0 ? 1 : 0;
      }
      const std::int32_t free_blocks = alloc.num_free();
      if (need > free_blocks + freeable) {
        const auto contents = radix_tree_model::tree_contents(tree);
        const ra::RadixTreeStats stats = tree.stats();
        EXPECT_THROW(mgr.add(prompt, ns), ra::CapacityError);
        ASSERT_EQ(radix_tree_model::tree_contents(tree).size(), contents.size());
        ASSERT_EQ(tree.stats().hit_tokens, stats.hit_tokens);
        ASSERT_EQ(tree.stats().miss_tokens, stats.miss_tokens);
        ASSERT_EQ(alloc.num_free(), free_blocks);
        ++capacity_errors;
      } else {
        const std::int32_t cached_before = tree.cached_blocks();
        const SequenceId id = mgr.add(prompt, ns);
        model.match(ns, lookup);
        model.add_locks(ns, lookup, k, +1);
        if (need > free_blocks) {
          model.evict(removed_since(cached_before));
          ++evicting_adds;
        }
        ASSERT_EQ(mgr.cached_prefix_len(id), static_cast<std::int32_t>(k) * bs);
        ModelSeq s{ns,     prompt, true, static_cast<std::int32_t>(prompt.size()), mgr.blocks(id),
                   lookup, k};
        for (std::size_t i = 0; i < k; ++i) {
          ASSERT_EQ(s.blocks[i], model.entries.at(model.prefix(ns, lookup, i + 1)).block);
        }
        ASSERT_EQ(s.blocks.size(), k + static_cast<std::size_t>(need));
        seqs[id] = s;
        ++adds;
      }
    } else if (kind < 50) {  // append_tokens (or a plain append now and then)
      if (seqs.empty()) continue;
      const SequenceId id = random_seq();
      ModelSeq& s = seqs.at(id);
      std::vector<TokenId> more(static_cast<std::size_t>(uniform(1, bs + 1)));
      for (auto& t : more) t = uniform(0, 2);
      const auto m = static_cast<std::int32_t>(more.size());
      const std::int32_t grow = (s.len + m + bs - 1) / bs - (s.len + bs - 1) / bs;
      const bool plain = uniform(0, 19) == 0;
      if (grow > alloc.num_free()) {
        EXPECT_THROW(plain ? mgr.append(id, m) : mgr.append_tokens(id, more), ra::CapacityError);
      } else {
        if (plain) {
          mgr.append(id, m);
          s.complete = false;
        } else {
          mgr.append_tokens(id, more);
          if (s.complete) s.tokens.insert(s.tokens.end(), more.begin(), more.end());
        }
        s.len += m;
        const std::vector<BlockId>& now = mgr.blocks(id);
        ASSERT_EQ(now.size(), s.blocks.size() + static_cast<std::size_t>(grow));
        for (std::size_t i = s.blocks.size(); i < now.size(); ++i) {
          ASSERT_EQ(alloc.ref_count(now[i]), 1);
        }
        s.blocks = now;
      }
    } else if (kind < 64) {  // finish: cache the full blocks with known ids
      if (seqs.empty()) continue;
      const SequenceId id = random_seq();
      const ModelSeq s = seqs.at(id);
      seqs.erase(id);
      mgr.finish(id);
      const std::size_t cached = std::min(static_cast<std::size_t>(s.len / bs),
                                          s.tokens.size() / static_cast<std::size_t>(bs));
      model.insert(s.ns, s.tokens,
                   std::vector<BlockId>(s.blocks.begin(),
                                        s.blocks.begin() + static_cast<std::ptrdiff_t>(cached)));
      model.add_locks(s.ns, s.prefix_tokens, s.prefix_blocks, -1);
      ++finishes;
    } else if (kind < 72) {  // abort
      if (seqs.empty()) continue;
      const SequenceId id = random_seq();
      const ModelSeq s = seqs.at(id);
      seqs.erase(id);
      mgr.abort(id);
      model.add_locks(s.ns, s.prefix_tokens, s.prefix_blocks, -1);
    } else if (kind < 80) {  // fork
      if (seqs.empty() || seqs.size() >= 6) continue;
      const SequenceId id = random_seq();
      ModelSeq child = seqs.at(id);
      const bool partial = child.len % bs != 0;
      if (partial && alloc.num_free() == 0) {
        EXPECT_THROW(mgr.fork(id), ra::CapacityError);
      } else {
        const ra::ForkResult f = mgr.fork(id);
        if (partial) child.blocks.back() = mgr.blocks(f.child).back();
        ASSERT_EQ(mgr.blocks(f.child), child.blocks);
        ASSERT_EQ(mgr.prefix_node(f.child), mgr.prefix_node(id));
        model.add_locks(child.ns, child.prefix_tokens, child.prefix_blocks, +1);
        seqs[f.child] = child;
      }
    } else if (kind < 97) {  // evict
      const std::int32_t cached_before = tree.cached_blocks();
      tree.evict(uniform(0, 5));
      model.evict(removed_since(cached_before));
    } else {  // ids that are gone: nothing may change
      const SequenceId bad = seqs.empty() ? 1000000 : seqs.rbegin()->first + 1;
      const std::int32_t free_blocks = alloc.num_free();
      EXPECT_THROW(mgr.finish(bad), ra::InvalidArgument);
      EXPECT_THROW(mgr.abort(bad), ra::InvalidArgument);
      EXPECT_THROW(mgr.append_tokens(bad, {1}), ra::InvalidArgument);
      ASSERT_EQ(alloc.num_free(), free_blocks);
    }

    ASSERT_NO_THROW(tree.validate()) << "after operation " << op;
    const std::map<Key, Entry> actual = radix_tree_model::tree_contents(tree);
    ASSERT_EQ(actual.size(), model.entries.size()) << "after operation " << op;
    for (const auto& [key, e] : model.entries) {
      const auto it = actual.find(key);
      ASSERT_NE(it, actual.end()) << "after operation " << op;
      ASSERT_EQ(it->second.block, e.block) << "after operation " << op;
      ASSERT_EQ(it->second.locks > 0, e.locks > 0) << "after operation " << op;
    }
    std::vector<std::int32_t> refs(static_cast<std::size_t>(alloc.num_blocks()), 0);
    for (const auto& [key, e] : model.entries) ++refs[static_cast<std::size_t>(e.block)];
    for (const auto& [id, s] : seqs) {
      ASSERT_EQ(mgr.context_len(id), s.len);
      ASSERT_EQ(mgr.blocks(id), s.blocks) << "after operation " << op;
      for (BlockId b : s.blocks) ++refs[static_cast<std::size_t>(b)];
    }
    for (BlockId b = 0; b < alloc.num_blocks(); ++b) {
      ASSERT_EQ(alloc.ref_count(b), refs[static_cast<std::size_t>(b)])
          << "block " << b << " after operation " << op;
    }
    ASSERT_EQ(mgr.num_sequences(), seqs.size());
  }
  std::printf("adds %d finishes %d capacity errors %d evicting adds %d\n", adds, finishes,
              capacity_errors, evicting_adds);
  EXPECT_GT(adds, kOps / 10);
  EXPECT_GT(finishes, kOps / 20);
  EXPECT_GT(capacity_errors, 10);
  EXPECT_GT(evicting_adds, 10);
  for (const auto& entry : seqs) mgr.abort(entry.first);
  EXPECT_EQ(tree.locked_blocks(), 0);
  tree.evict(alloc.num_blocks());
  EXPECT_EQ(alloc.num_free(), alloc.num_blocks());
  tree.validate();
}

}  // namespace
