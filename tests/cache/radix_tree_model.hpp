// Naive model of RadixTree's cached contents, shared by the randomized model tests: a map from
// every cached block-prefix (namespace + whole-block token prefix) to its block, LRU time and
// lock count. Eviction removes one block at a time, least recently used unlocked leaf first.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"

namespace radix_tree_model {

namespace ra = radix_attention;
using ra::BlockId;
using ra::NodeHandle;
using ra::TokenId;

using Key = std::pair<ra::NamespaceId, std::vector<TokenId>>;  // namespace + whole-block prefix

struct Entry {
  BlockId block = -1;
  std::uint64_t time = 0;
  std::int32_t locks = 0;
};

// The naive model: one entry per cached block, keyed by the full prefix that ends with it.
struct Model {
  std::int32_t bs;
  std::map<Key, Entry> entries;
  std::uint64_t clock = 0;

  Key prefix(ra::NamespaceId ns, const std::vector<TokenId>& t, std::size_t blocks) const {
    return {ns, std::vector<TokenId>(t.begin(),
                                     t.begin() + static_cast<std::ptrdiff_t>(
                                                     blocks * static_cast<std::size_t>(bs)))};
  }
  std::size_t cached_prefix(ra::NamespaceId ns, const std::vector<TokenId>& t) const {
    std::size_t k = 0;
    while ((k + 1) * static_cast<std::size_t>(bs) <= t.size() &&
           entries.count(prefix(ns, t, k + 1)))
      ++k;
    return k;
  }
  std::vector<BlockId> match(ra::NamespaceId ns, const std::vector<TokenId>& t) {
    ++clock;
    std::vector<BlockId> out;
    for (std::size_t k = 1; k <= cached_prefix(ns, t); ++k) {
      Entry& e = entries.at(prefix(ns, t, k));
      e.time = clock;
      out.push_back(e.block);
    }
    return out;
  }
  std::int32_t insert(ra::NamespaceId ns, const std::vector<TokenId>& t,
                      const std::vector<BlockId>& blocks) {
    ++clock;
    std::int32_t dedup = 0;
    for (std::size_t k = 1; k <= blocks.size(); ++k) {
      auto [it, inserted] = entries.try_emplace(prefix(ns, t, k), Entry{blocks[k - 1], 0, 0});
      dedup += inserted ? 0 : 1;
      it->second.time = clock;
    }
    return dedup;
  }
  void add_locks(ra::NamespaceId ns, const std::vector<TokenId>& t, std::size_t blocks, int d) {
    for (std::size_t k = 1; k <= blocks; ++k) entries.at(prefix(ns, t, k)).locks += d;
  }
  std::set<Key> parents_with_children() const {
    std::set<Key> out;
    for (const auto& [key, e] : entries) {
      Key parent = key;
      parent.second.resize(parent.second.size() - static_cast<std::size_t>(bs));
      out.insert(std::move(parent));
    }
    return out;
  }
  std::int32_t evictable() const {
    std::int32_t n = 0;
    for (const auto& [key, e] : entries) n += e.locks == 0 ? 1 : 0;
    return n;
  }
  // Evicts `n` blocks one at a time: the least recently used unlocked leaf prefix first.
  void evict(std::int32_t n) {
    for (; n > 0; --n) {
      const std::set<Key> inner = parents_with_children();
      auto victim = entries.end();
      for (auto it = entries.begin(); it != entries.end(); ++it) {
        if (it->second.locks != 0 || inner.count(it->first)) continue;
        if (victim == entries.end() || it->second.time < victim->second.time) victim = it;
      }
      ASSERT_NE(victim, entries.end());
      entries.erase(victim);
    }
  }
};

// The tree's cached contents in the model's form.
inline std::map<Key, Entry> tree_contents(const ra::RadixTree& tree) {
  std::map<Key, Entry> out;
  std::vector<std::pair<NodeHandle, std::vector<TokenId>>> stack{{tree.root(), {}}};
  const auto bs = static_cast<std::size_t>(tree.block_size());
  while (!stack.empty()) {
    auto [node, path] = std::move(stack.back());
    stack.pop_back();
    const auto& edge = tree.edge_tokens(node);
    const auto& blocks = tree.node_blocks(node);
    for (std::size_t j = 0; j < blocks.size(); ++j) {
      path.insert(path.end(), edge.begin() + static_cast<std::ptrdiff_t>(j * bs),
                  edge.begin() + static_cast<std::ptrdiff_t>((j + 1) * bs));
      out[{tree.node_namespace(node), path}] = Entry{blocks[j], 0, tree.lock_count(node)};
    }
    for (NodeHandle c : tree.children(node)) stack.push_back({c, path});
  }
  return out;
}

}  // namespace radix_tree_model
