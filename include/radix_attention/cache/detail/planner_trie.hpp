#pragma once
/// @file
/// Batch planner internals: the block trie of a batch (included by cache/batch_planner.hpp; not
/// a public header).
///
/// Sequences that share a cached prefix hold the same block ids at the same positions, so a
/// path-compressed trie over the rows' full-block id sequences reproduces the radix tree's paths
/// that the batch uses: a node is a block range [begin_block, end_block) identical in every query
/// of its query set. Nodes are built by MSD partitioning of one query permutation, so each node's
/// queries are a contiguous range of `order`, and nodes come in pre-order (a parent before its
/// children). Cost: O(used blocks + sum of k log k over branching nodes).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "radix_attention/cache/detail/planner_input.hpp"

namespace radix_attention::detail {

struct TrieNode {
  std::int32_t begin_block = 0;  ///< first block position of the node's edge
  std::int32_t end_block = 0;    ///< one past its last block position
  std::int32_t query_begin = 0;  ///< the node's queries: order[query_begin .. query_end)
  std::int32_t query_end = 0;
  std::int32_t parent = -1;  ///< -1 for a node at the top of the trie
  std::int32_t num_queries() const { return query_end - query_begin; }
};

struct BlockTrie {
  std::vector<std::int32_t> order;        ///< queries with >= 1 full block, grouped by node
  std::vector<TrieNode> nodes;            ///< pre-order
  std::vector<std::int32_t> last_node;    ///< per query: deepest node of its path, -1 if none
  std::vector<std::int32_t> full_blocks;  ///< per query: context_len / block_size

  void clear() {
    order.clear();
    nodes.clear();
    last_node.clear();
    full_blocks.clear();
  }
};

/// Builds the trie of a batch whose input was already checked (check_block_table_view).
inline void build_block_trie(const BatchRows& batch, BlockTrie& trie) {
  trie.clear();
  const std::int32_t n = batch.num_seqs;
  trie.full_blocks.resize(static_cast<std::size_t>(n));
  trie.last_node.assign(static_cast<std::size_t>(n), -1);
  for (std::int32_t q = 0; q < n; ++q) {
    trie.full_blocks[static_cast<std::size_t>(q)] = batch.context_lens[q] / batch.block_size;
    if (trie.full_blocks[static_cast<std::size_t>(q)] > 0) trie.order.push_back(q);
  }
  const auto row = [&](std::int32_t q) { return batch.row(q); };
  const auto full = [&](std::int32_t q) { return trie.full_blocks[static_cast<std::size_t>(q)]; };

  struct Pending {
    std::int32_t lo, hi, depth, parent;
  };
  std::vector<Pending> stack;
  // Splits order[lo, hi) (queries that all have a full block at `depth`) into groups of equal
  // block id at `depth`, ascending by query within a group, and schedules them in pre-order.
  const auto push_groups = [&](std::int32_t lo, std::int32_t hi, std::int32_t depth,
                               std::int32_t parent) {
    auto first = trie.order.begin() + lo;
    auto last = trie.order.begin() + hi;
    std::sort(first, last, [&](std::int32_t a, std::int32_t b) {
      const std::int32_t ka = row(a)[depth];
      const std::int32_t kb = row(b)[depth];
      return ka != kb ? ka < kb : a < b;
    });
    const std::size_t mark = stack.size();
    for (std::int32_t i = lo; i < hi;) {
      std::int32_t j = i + 1;
      const std::int32_t key = row(trie.order[static_cast<std::size_t>(i)])[depth];
      while (j < hi && row(trie.order[static_cast<std::size_t>(j)])[depth] == key) ++j;
      stack.push_back({i, j, depth, parent});
      i = j;
    }
    // Visit groups in the order of their smallest query: deterministic and readable plans.
    std::sort(stack.begin() + static_cast<std::ptrdiff_t>(mark), stack.end(),
              [&](const Pending& a, const Pending& b) {
                return trie.order[static_cast<std::size_t>(a.lo)] >
                       trie.order[static_cast<std::size_t>(b.lo)];
              });
  };
  push_groups(0, static_cast<std::int32_t>(trie.order.size()), 0, -1);

  while (!stack.empty()) {
    const Pending g = stack.back();
    stack.pop_back();
    const std::int32_t* lead = row(trie.order[static_cast<std::size_t>(g.lo)]);
    // The node ends where the first query stops agreeing with the lead query (or runs out of
    // full blocks): the group's longest common prefix, one contiguous row scan per query.
    std::int32_t end = full(trie.order[static_cast<std::size_t>(g.lo)]);
    for (std::int32_t i = g.lo + 1; i < g.hi; ++i) {
      const std::int32_t q = trie.order[static_cast<std::size_t>(i)];
      const std::int32_t limit = std::min(end, full(q));
      const std::int32_t* r = row(q);
      std::int32_t e = g.depth + 1;  // the group agrees on block `depth` by construction
      while (e < limit && r[e] == lead[e]) ++e;
      end = e;
    }
    const auto id = static_cast<std::int32_t>(trie.nodes.size());
    trie.nodes.push_back({g.depth, end, g.lo, g.hi, g.parent});
    // Queries whose full blocks end here go first (stable: still ascending); the rest branch.
    auto mid = std::stable_partition(trie.order.begin() + g.lo, trie.order.begin() + g.hi,
                                     [&](std::int32_t q) { return full(q) == end; });
    const auto split = static_cast<std::int32_t>(mid - trie.order.begin());
    for (std::int32_t i = g.lo; i < split; ++i) {
      trie.last_node[static_cast<std::size_t>(trie.order[static_cast<std::size_t>(i)])] = id;
    }
    if (split < g.hi) push_groups(split, g.hi, end, id);
  }
}

}  // namespace radix_attention::detail
