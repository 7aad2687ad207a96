#pragma once
/// @file
/// RadixTree internals: construction, node storage, the child index, sibling links, edge
/// splits and read-only traversal. Included by radix_tree.hpp only.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace radix_attention {

inline RadixTree::RadixTree(BlockAllocator& allocator, std::int32_t block_size,
                            std::unique_ptr<EvictionPolicy> policy)
    : allocator_(&allocator), block_size_(block_size), policy_(std::move(policy)) {
  expects(block_size >= 1, "block_size", block_size, "must be >= 1");
  if (!policy_) policy_ = std::make_unique<LruPolicy>();
  nodes_.emplace_back();
  nodes_[0].alive = true;
  num_nodes_ = 1;
  block_node_.assign(static_cast<std::size_t>(allocator.num_blocks()), detail::kNoNode);
  scratch_.assign(static_cast<std::size_t>(allocator.num_blocks()), 0);
}

// Best effort and never throwing: a block that is already free (someone released the tree's
// reference behind its back) makes release() throw; it is skipped rather than letting the
// exception leave a destructor, which would terminate the process, and the other blocks still
// go back to the pool.
inline RadixTree::~RadixTree() noexcept {
  for (const detail::RadixNode& node : nodes_) {
    if (!node.alive) continue;
    for (BlockId block : node.blocks) {
      try {
        allocator_->release(block);
      } catch (...) {  // NOLINT(bugprone-empty-catch): see above
      }
    }
  }
}

inline const detail::RadixNode& RadixTree::at(NodeHandle node) const {
  expects(contains(node), "node", node.id, "is not a live node of this radix tree");
  return node_ref(node.id);
}

inline detail::NodeIndex RadixTree::find_child(NodeIndex parent, const TokenId* first_block,
                                               NamespaceId ns) const {
  const auto it = index_.find(detail::child_key_hash(parent, ns, first_block, block_size_));
  if (it == index_.end()) return detail::kNoNode;
  const auto bs = static_cast<std::size_t>(block_size_);
  for (NodeIndex c = it->second; c != detail::kNoNode; c = node_ref(c).hash_next) {
    const detail::RadixNode& n = node_ref(c);
    if (n.parent == parent && n.ns == ns && detail::same_tokens(n.tokens.data(), first_block, bs)) {
      return c;
    }
  }
  return detail::kNoNode;
}

// Number of leading whole blocks of `node`'s edge equal to `tokens` (at most max_blocks). The
// caller found the node by its first block, so the answer is >= 1 when max_blocks >= 1.
inline std::size_t RadixTree::common_blocks(NodeIndex node, const TokenId* tokens,
                                            std::size_t max_blocks) const {
  const auto bs = static_cast<std::size_t>(block_size_);
  const TokenId* edge = node_ref(node).tokens.data();
  if (detail::same_tokens(edge, tokens, max_blocks * bs)) return max_blocks;
  std::size_t i = 0;
  while (edge[i] == tokens[i]) ++i;  // a mismatch exists before max_blocks * bs
  return i / bs;
}

inline detail::NodeIndex RadixTree::new_node() {
  NodeIndex i;
  if (!free_nodes_.empty()) {
    i = free_nodes_.back();
    free_nodes_.pop_back();
  } else {
    nodes_.emplace_back();
    i = static_cast<NodeIndex>(nodes_.size() - 1);
  }
  detail::RadixNode& n = node_ref(i);
  n = detail::RadixNode{};
  n.alive = true;
  ++num_nodes_;
  return i;
}

inline void RadixTree::free_node(NodeIndex i) {
  node_ref(i) = detail::RadixNode{};  // drops the edge's memory too
  free_nodes_.push_back(i);
  --num_nodes_;
}

inline void RadixTree::index_insert(NodeIndex i) {
  detail::RadixNode& n = node_ref(i);
  // A slot may exist already, empty (kNoNode) when split() created it in advance.
  auto [it, inserted] = index_.try_emplace(n.key_hash, i);
  n.hash_next = inserted ? detail::kNoNode : it->second;
  it->second = i;
}

inline void RadixTree::index_erase(NodeIndex i) {
  const auto it = index_.find(node_ref(i).key_hash);
  NodeIndex* link = &it->second;
  while (*link != i) link = &node_ref(*link).hash_next;
  *link = node_ref(i).hash_next;
  if (it->second == detail::kNoNode) index_.erase(it);
  node_ref(i).hash_next = detail::kNoNode;
}

// `new_node` takes `old_node`'s place in its hash chain (same parent, namespace, first block).
inline void RadixTree::index_replace(NodeIndex old_node, NodeIndex new_node) {
  const auto it = index_.find(node_ref(old_node).key_hash);
  NodeIndex* link = &it->second;
  while (*link != old_node) link = &node_ref(*link).hash_next;
  *link = new_node;
  node_ref(new_node).hash_next = node_ref(old_node).hash_next;
  node_ref(old_node).hash_next = detail::kNoNode;
}

inline void RadixTree::link_child(NodeIndex parent, NodeIndex child) {
  detail::RadixNode& p = node_ref(parent);
  detail::RadixNode& c = node_ref(child);
  c.parent = parent;
  c.prev_sibling = detail::kNoNode;
  c.next_sibling = p.first_child;
  if (p.first_child != detail::kNoNode) node_ref(p.first_child).prev_sibling = child;
  p.first_child = child;
  ++p.num_children;
}

inline void RadixTree::unlink_child(NodeIndex child) {
  detail::RadixNode& c = node_ref(child);
  detail::RadixNode& p = node_ref(c.parent);
  if (c.prev_sibling != detail::kNoNode) {
    node_ref(c.prev_sibling).next_sibling = c.next_sibling;
  } else {
    p.first_child = c.next_sibling;
  }
  if (c.next_sibling != detail::kNoNode) node_ref(c.next_sibling).prev_sibling = c.prev_sibling;
  --p.num_children;
  c.prev_sibling = c.next_sibling = detail::kNoNode;
}

// Splits `node`'s edge after `keep_blocks` blocks: a new node takes the upper part and `node`
// keeps the lower part, so handles to `node` (locks included) still end at the same token. The
// new node inherits lock count and LRU time: every lock or access of `node` went through it.
// Everything that can throw (node slot, edge copies, index entry) happens before any link changes.
inline detail::NodeIndex RadixTree::split(NodeIndex node, std::size_t keep_blocks) {
  const std::size_t keep_tokens = keep_blocks * static_cast<std::size_t>(block_size_);
  const NodeIndex mid = new_node();
  try {
    detail::RadixNode& m = node_ref(mid);
    const detail::RadixNode& n = node_ref(node);
    m.tokens.assign(n.tokens.begin(), n.tokens.begin() + static_cast<std::ptrdiff_t>(keep_tokens));
    m.blocks.assign(n.blocks.begin(), n.blocks.begin() + static_cast<std::ptrdiff_t>(keep_blocks));
    m.key_hash = detail::child_key_hash(mid, n.ns, n.tokens.data() + keep_tokens, block_size_);
    index_.try_emplace(m.key_hash, detail::kNoNode);  // the lower part's slot, filled below
  } catch (...) {
    free_node(mid);
    throw;
  }
  detail::RadixNode& m = node_ref(mid);
  detail::RadixNode& n = node_ref(node);
  const std::uint64_t lower_hash = m.key_hash;
  m.ns = n.ns;
  m.start_token = n.start_token;
  m.lock_count = n.lock_count;
  m.last_access = n.last_access;
  m.access_count = n.access_count;
  m.key_hash = n.key_hash;
  index_replace(node, mid);
  // mid takes node's place among its siblings.
  m.parent = n.parent;
  m.prev_sibling = n.prev_sibling;
  m.next_sibling = n.next_sibling;
  if (m.prev_sibling != detail::kNoNode) {
    node_ref(m.prev_sibling).next_sibling = mid;
  } else {
    node_ref(m.parent).first_child = mid;
  }
  if (m.next_sibling != detail::kNoNode) node_ref(m.next_sibling).prev_sibling = mid;
  n.prev_sibling = n.next_sibling = detail::kNoNode;

  n.tokens.erase(n.tokens.begin(), n.tokens.begin() + static_cast<std::ptrdiff_t>(keep_tokens));
  n.blocks.erase(n.blocks.begin(), n.blocks.begin() + static_cast<std::ptrdiff_t>(keep_blocks));
  n.start_token += static_cast<std::int32_t>(keep_tokens);
  n.key_hash = lower_hash;
  m.num_children = 0;
  m.first_child = detail::kNoNode;
  link_child(mid, node);
  index_insert(node);  // the entry exists already: no allocation
  for (BlockId b : m.blocks) block_node_[static_cast<std::size_t>(b)] = mid;
  return mid;
}

inline bool RadixTree::is_candidate(NodeIndex i) const {
  const detail::RadixNode& n = node_ref(i);
  return i != 0 && n.num_children == 0 && n.lock_count == 0;
}

inline EvictionCandidate RadixTree::candidate(NodeIndex i) const {
  const detail::RadixNode& n = node_ref(i);
  return EvictionCandidate{i, n.last_access, n.access_count,
                           static_cast<std::int32_t>(n.blocks.size())};
}

inline RadixTreeStats RadixTree::stats() const {
  RadixTreeStats s;
  s.num_nodes = num_nodes_;
  s.cached_blocks = cached_blocks_;
  s.evictable_blocks = evictable_blocks();
  s.locked_blocks = locked_blocks_;
  s.hit_tokens = hit_tokens_;
  s.miss_tokens = miss_tokens_;
  s.evicted_blocks = evicted_blocks_;
  return s;
}

inline NodeHandle RadixTree::parent(NodeHandle node) const { return NodeHandle{at(node).parent}; }

inline std::vector<NodeHandle> RadixTree::children(NodeHandle node) const {
  std::vector<NodeHandle> out;
  out.reserve(static_cast<std::size_t>(at(node).num_children));
  for (NodeIndex c = at(node).first_child; c != detail::kNoNode; c = node_ref(c).next_sibling) {
    out.push_back(NodeHandle{c});
  }
  return out;
}

inline TokenRange RadixTree::token_range(NodeHandle node) const {
  const detail::RadixNode& n = at(node);
  return TokenRange{n.start_token, n.end_token()};
}

inline std::vector<NodeHandle> RadixTree::path(NodeHandle node) const {
  at(node);
  std::vector<NodeHandle> out;
  for (NodeIndex i = node.id; i != detail::kNoNode; i = node_ref(i).parent) {
    out.push_back(NodeHandle{i});
  }
  std::reverse(out.begin(), out.end());
  return out;
}

inline std::vector<BlockId> RadixTree::path_blocks(NodeHandle node) const {
  const std::vector<NodeHandle> nodes = path(node);
  std::vector<BlockId> out;
  out.reserve(static_cast<std::size_t>(at(node).end_token() / block_size_));
  for (NodeHandle h : nodes) {
    const std::vector<BlockId>& b = node_ref(h.id).blocks;
    out.insert(out.end(), b.begin(), b.end());
  }
  return out;
}

inline std::int32_t RadixTree::depth(NodeHandle node) const {
  std::int32_t d = 0;
  for (NodeIndex i = at(node).parent; i != detail::kNoNode; i = node_ref(i).parent) ++d;
  return d;
}

}  // namespace radix_attention
