#pragma once
/// @file
/// Batch planner internals: the persistent block trie of a BatchPlanner (included by
/// cache/batch_planner.hpp; not a public header).
///
/// The same path-compressed trie over the rows' full-block id sequences as BlockTrie
/// (planner_trie.hpp), kept from one step to the next and updated in place: a row that gains
/// full blocks extends its path (a private leaf just grows its edge, lazily: set_owner_rows),
/// a new row is inserted
/// (splitting an edge where it diverges), a row that left is removed (deleting nodes no row
/// uses and merging a node left with one child and no row ending in it). A compressed trie is
/// unique for a set of rows, so after the updates it equals the trie built from scratch;
/// export() writes it as a BlockTrie in the same node order (pre-order, children by their
/// smallest query) in O(rows + nodes), which is what makes the planner's step independent of
/// the context lengths.

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "radix_attention/cache/detail/planner_trie.hpp"

namespace radix_attention::detail {

class PrefixTrie {
 public:
  /// The sentinel above the top-level nodes: never removed, no row ends in it.
  static constexpr std::int32_t kRoot = 0;

  PrefixTrie() { clear(); }

  void clear() {
    nodes_.clear();
    free_.clear();
    lazy_.clear();
    nodes_.emplace_back();
    ++version_;
  }

  /// Changes whenever the trie's shape changes: nodes added, removed, split or merged, or rows
  /// added or removed. Only a private leaf growing its edge keeps it: an export at the same
  /// version differs only in such leaves' ends (BatchPlanner patches them).
  std::uint64_t version() const { return version_; }

  /// Number of nodes, the sentinel excluded.
  std::int32_t size() const { return static_cast<std::int32_t>(nodes_.size() - free_.size()) - 1; }

  /// A new row with full blocks row[0 .. to), to >= 1: inserts its path and returns its end node.
  std::int32_t insert(const std::int32_t* row, std::int32_t to) {
    ++version_;
    materialize();
    return descend(kRoot, row, 0, to);
  }

  /// The rows of the current update, indexed by the owner ids given to extend(): a private
  /// leaf that grows only counts its new blocks (`pending`) and copies them from its owner's
  /// row when edges are next compared (insert, extend of a shared path), which a decode step
  /// with no row joining does not do. Must hold, until the next insert or extend, the row of
  /// every owner whose leaf has pending blocks.
  void set_owner_rows(const std::vector<const std::int32_t*>* rows) { owner_rows_ = rows; }

  /// The row ending at `node` grows from `from` = that node's end to `to` > from full blocks;
  /// `owner` indexes its row in the owner rows (set_owner_rows).
  std::int32_t extend(std::int32_t node, const std::int32_t* row, std::int32_t from,
                      std::int32_t to, std::int32_t owner) {
    Node& n = nodes_[static_cast<std::size_t>(node)];
    if (n.num_rows == 1 && n.children.empty()) {  // a private leaf: nothing else to update
      if (n.pending == 0) lazy_.push_back(node);
      n.pending += to - from;
      n.owner = owner;
      return node;
    }
    ++version_;
    materialize();
    --n.num_ending;
    const std::int32_t end = descend(node, row, from, to);
    canonicalize(node);  // it may now be a pass-through node with a single child
    return end;
  }

  /// The row ending at `node` leaves.
  void remove(std::int32_t node) {
    ++version_;
    --nodes_[static_cast<std::size_t>(node)].num_ending;
    for (std::int32_t m = node; m != kRoot; m = nodes_[static_cast<std::size_t>(m)].parent) {
      --nodes_[static_cast<std::size_t>(m)].num_rows;
    }
    canonicalize(node);
  }

  /// Writes the trie as a BlockTrie for a batch whose row q ends at end_nodes[q] (-1: no full
  /// block) with full_blocks[q] full blocks; every node must lie on some row's path.
  void export_to(const std::int32_t* end_nodes, const std::int32_t* full_blocks, std::int32_t n,
                 std::uint64_t step, BlockTrie& out) {
    out.clear();
    out.full_blocks.assign(full_blocks, full_blocks + n);
    out.last_node.assign(static_cast<std::size_t>(n), -1);
    Node& root = nodes_[kRoot];
    root.stamp = step;
    root.ordered.clear();
    // Children in the order of their smallest query: the order in which an ascending pass over
    // the queries first reaches them (a node is listed under its parent when first reached).
    for (std::int32_t q = 0; q < n; ++q) {
      std::int32_t m = end_nodes[q];
      if (m < 0 || at(m).stamp == step) continue;
      chain_.clear();
      for (; at(m).stamp != step; m = at(m).parent) chain_.push_back(m);
      for (auto it = chain_.rbegin(); it != chain_.rend(); ++it) {
        Node& x = at(*it);
        x.stamp = step;
        x.ordered.clear();
        at(x.parent).ordered.push_back(*it);
      }
    }
    // Pre-order; a node's queries are its ending rows, then its children's, so its range is
    // [cursor, cursor + num_rows).
    std::int32_t cursor = 0;
    chain_.assign(root.ordered.rbegin(), root.ordered.rend());
    while (!chain_.empty()) {
      const std::int32_t m = chain_.back();
      chain_.pop_back();
      Node& x = at(m);
      x.pid = static_cast<std::int32_t>(out.nodes.size());
      x.fill = cursor;
      const std::int32_t parent = x.parent == kRoot ? -1 : at(x.parent).pid;
      out.nodes.push_back({x.depth, x.end(), cursor, cursor + x.num_rows, parent});
      cursor += x.num_ending;
      chain_.insert(chain_.end(), x.ordered.rbegin(), x.ordered.rend());
    }
    out.order.resize(static_cast<std::size_t>(cursor));
    for (std::int32_t q = 0; q < n; ++q) {
      if (end_nodes[q] < 0) continue;
      Node& x = at(end_nodes[q]);
      out.order[static_cast<std::size_t>(x.fill++)] = q;
      out.last_node[static_cast<std::size_t>(q)] = x.pid;
    }
  }

 private:
  struct Node {
    std::int32_t parent = kRoot;
    std::int32_t depth = 0;          ///< block position of the edge's first block
    std::vector<std::int32_t> edge;  ///< block ids at [depth, depth + edge.size())
    std::vector<std::pair<std::int32_t, std::int32_t>> children;  ///< (first block id, node)
    std::int32_t num_rows = 0;    ///< rows through or ending in this node
    std::int32_t num_ending = 0;  ///< rows whose full blocks end at end()
    std::int32_t pending = 0;     ///< blocks past `edge` not copied yet (a lazy private leaf)
    std::int32_t owner = 0;       ///< whose row holds them
    // Scratch of export_to.
    std::uint64_t stamp = 0;
    std::vector<std::int32_t> ordered;  ///< children by smallest query
    std::int32_t pid = 0;               ///< index in the exported BlockTrie
    std::int32_t fill = 0;              ///< next slot of its ending rows in BlockTrie::order

    std::int32_t end() const { return depth + static_cast<std::int32_t>(edge.size()) + pending; }
  };

  Node& at(std::int32_t id) { return nodes_[static_cast<std::size_t>(id)]; }

  std::int32_t child(std::int32_t node, std::int32_t first_block) const {
    for (const auto& [key, id] : nodes_[static_cast<std::size_t>(node)].children) {
      if (key == first_block) return id;
    }
    return -1;
  }

  void relink(std::int32_t parent, std::int32_t first_block, std::int32_t id) {
    for (auto& entry : at(parent).children) {
      if (entry.first == first_block) entry.second = id;
    }
  }

  std::int32_t make_node() {
    if (!free_.empty()) {
      const std::int32_t id = free_.back();
      free_.pop_back();
      return id;
    }
    nodes_.emplace_back();
    return static_cast<std::int32_t>(nodes_.size() - 1);
  }

  void free_node(std::int32_t id) {
    Node& n = at(id);
    n.edge.clear();  // keeps capacity for the next node
    n.children.clear();
    n.num_rows = n.num_ending = n.pending = 0;
    free_.push_back(id);
  }

  // From the end of node `cur` (at block `d`), walks and extends the path of a row whose full
  // blocks are row[.. to); counts the row in every node it enters below `cur`.
  std::int32_t descend(std::int32_t cur, const std::int32_t* row, std::int32_t d, std::int32_t to) {
    while (d < to) {
      std::int32_t c = child(cur, row[d]);
      if (c < 0) {
        const std::int32_t leaf = make_node();
        Node& l = at(leaf);
        l.parent = cur;
        l.depth = d;
        l.edge.assign(row + d, row + to);
        l.num_rows = l.num_ending = 1;
        at(cur).children.emplace_back(row[d], leaf);
        return leaf;
      }
      const auto& edge = at(c).edge;
      const auto limit = std::min<std::int32_t>(static_cast<std::int32_t>(edge.size()), to - d);
      std::int32_t k = 1;  // the child's first block matches by lookup
      while (k < limit && edge[static_cast<std::size_t>(k)] == row[d + k]) ++k;
      if (k < static_cast<std::int32_t>(at(c).edge.size())) c = split(c, k);
      ++at(c).num_rows;
      cur = c;
      d += k;
    }
    ++at(cur).num_ending;
    return cur;
  }

  // Cuts node c after k blocks; returns the new upper node, which takes c's place.
  std::int32_t split(std::int32_t c, std::int32_t k) {
    const std::int32_t upper = make_node();
    Node& u = at(upper);
    Node& lower = at(c);
    u.parent = lower.parent;
    u.depth = lower.depth;
    u.edge.assign(lower.edge.begin(), lower.edge.begin() + k);
    u.num_rows = lower.num_rows;
    u.num_ending = 0;
    u.children.emplace_back(lower.edge[static_cast<std::size_t>(k)], c);
    relink(lower.parent, u.edge.front(), upper);
    lower.edge.erase(lower.edge.begin(), lower.edge.begin() + k);
    lower.depth += k;
    lower.parent = upper;
    return upper;
  }

  // Restores the compressed form at `m` after rows left it or passed on below it: deletes
  // nodes no row uses (moving up), or merges a node with one child and no ending row into it.
  void canonicalize(std::int32_t m) {
    while (m != kRoot) {
      Node& n = at(m);
      if (n.num_rows == 0) {  // then it has no children either
        const std::int32_t parent = n.parent;
        auto& siblings = at(parent).children;
        const std::int32_t first = n.edge.front();
        siblings.erase(std::find_if(siblings.begin(), siblings.end(),
                                    [&](const auto& e) { return e.first == first; }));
        free_node(m);
        m = parent;
        continue;
      }
      if (n.num_ending == 0 && n.children.size() == 1) {
        Node& c = at(n.children.front().second);
        c.edge.insert(c.edge.begin(), n.edge.begin(), n.edge.end());
        c.depth = n.depth;
        c.parent = n.parent;
        relink(n.parent, n.edge.front(), n.children.front().second);
        free_node(m);
      }
      return;
    }
  }

  std::vector<Node> nodes_;
  std::vector<std::int32_t> free_;
  // Copies the pending blocks of every lazy leaf from its owner's row (each block once). A
  // merge (canonicalize) may have put another node's edge in front: pending blocks trail.
  void materialize() {
    for (const std::int32_t id : lazy_) {
      Node& n = at(id);
      if (n.pending == 0) continue;  // freed, or listed twice
      const std::int32_t* row = (*owner_rows_)[static_cast<std::size_t>(n.owner)];
      const std::int32_t from = n.depth + static_cast<std::int32_t>(n.edge.size());
      n.edge.insert(n.edge.end(), row + from, row + from + n.pending);
      n.pending = 0;
    }
    lazy_.clear();
  }

  std::vector<std::int32_t> chain_;
  std::vector<std::int32_t> lazy_;  ///< leaves that may have pending blocks
  const std::vector<const std::int32_t*>* owner_rows_ = nullptr;
  std::uint64_t version_ = 0;
};

}  // namespace radix_attention::detail
