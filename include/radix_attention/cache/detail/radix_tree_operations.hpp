#pragma once
/// @file
/// RadixTree internals: match, insert, lock / unlock and eviction. Included by radix_tree.hpp.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace radix_attention {

// Marks the path root..node as used now, without telling the policy.
inline void RadixTree::mark_path(NodeIndex node) {
  ++clock_;
  for (NodeIndex i = node; i != detail::kNoNode; i = node_ref(i).parent) {
    detail::RadixNode& n = node_ref(i);
    n.last_access = clock_;
    ++n.access_count;
  }
}

// mark_path, then tells the policy. Only `node` can be an eviction candidate: every other node
// on the path has a child.
inline void RadixTree::touch_path(NodeIndex node) {
  mark_path(node);
  if (is_candidate(node)) policy_->touch(candidate(node));
}

inline PrefixMatch RadixTree::match_prefix(const TokenId* tokens, std::size_t num_tokens,
                                           NamespaceId ns) {
  expects(tokens != nullptr || num_tokens == 0, "tokens", "null",
          "must point to num_tokens token ids");
  const auto bs = static_cast<std::size_t>(block_size_);
  const std::size_t max_blocks = num_tokens / bs;
  PrefixMatch result;
  NodeIndex node = 0;
  std::size_t pos = 0;  // matched blocks
  while (pos < max_blocks) {
    const TokenId* rest = tokens + pos * bs;
    NodeIndex child = find_child(node, rest, ns);
    if (child == detail::kNoNode) break;
    const std::size_t edge_blocks = node_ref(child).blocks.size();
    const std::size_t m = common_blocks(child, rest, std::min(edge_blocks, max_blocks - pos));
    if (m < edge_blocks) child = split(child, m);  // the match ends inside this edge
    if (result.blocks.empty()) result.blocks.reserve(max_blocks);
    const std::vector<BlockId>& b = node_ref(child).blocks;
    result.blocks.insert(result.blocks.end(), b.begin(), b.end());
    node = child;
    pos += m;
    if (m < edge_blocks) break;
  }
  touch_path(node);
  result.num_tokens = static_cast<std::int32_t>(pos * bs);
  result.node = NodeHandle{node};
  hit_tokens_ += pos * bs;
  miss_tokens_ += num_tokens - pos * bs;
  return result;
}

inline PrefixPeek RadixTree::peek_prefix(const TokenId* tokens, std::size_t num_tokens,
                                         NamespaceId ns, std::vector<BlockId>* blocks) const {
  expects(tokens != nullptr || num_tokens == 0, "tokens", "null",
          "must point to num_tokens token ids");
  const auto bs = static_cast<std::size_t>(block_size_);
  const std::size_t max_blocks = num_tokens / bs;
  PrefixPeek result;
  if (blocks != nullptr) blocks->clear();
  NodeIndex node = 0;
  std::size_t pos = 0;
  while (pos < max_blocks) {
    const NodeIndex child = find_child(node, tokens + pos * bs, ns);
    if (child == detail::kNoNode) break;
    const std::size_t edge_blocks = node_ref(child).blocks.size();
    const std::size_t m =
        common_blocks(child, tokens + pos * bs, std::min(edge_blocks, max_blocks - pos));
    if (node_ref(child).lock_count == 0) result.unlocked_blocks += static_cast<std::int32_t>(m);
    if (blocks != nullptr) {
      const auto& b = node_ref(child).blocks;
      blocks->insert(blocks->end(), b.begin(), b.begin() + static_cast<std::ptrdiff_t>(m));
    }
    pos += m;
    if (m < edge_blocks) break;
    node = child;
  }
  result.num_tokens = static_cast<std::int32_t>(pos * bs);
  return result;
}

// Checks that the caller holds a reference on every block it passes (so consuming it is legal)
// and that newly cached blocks (positions >= cached_prefix) are not cached already, so the tree
// holds each block once. The loops only compare; messages are built on failure only (this runs
// for every block of every insert). scratch_ is restored before returning or throwing.
inline void RadixTree::check_insert_blocks(const BlockId* blocks, std::size_t num_blocks,
                                           std::size_t cached_prefix) const {
  const BlockAllocator& alloc = *allocator_;
  for (std::size_t i = 0; i < num_blocks; ++i) {
    if (!alloc.contains(blocks[i]) || alloc.ref_count(blocks[i]) == 0) {
      expects(false, "blocks[i]", blocks[i],
              "is not a block held in the allocator (foreign or free)");
    }
  }
  struct Restore {
    const BlockId* blocks;
    std::size_t n;
    std::vector<std::int32_t>& scratch;
    ~Restore() {
      for (std::size_t i = 0; i < n; ++i) scratch[static_cast<std::size_t>(blocks[i])] = 0;
    }
  } restore{blocks, num_blocks, scratch_};
  for (std::size_t i = 0; i < num_blocks; ++i) ++scratch_[static_cast<std::size_t>(blocks[i])];
  for (std::size_t i = 0; i < num_blocks; ++i) {
    const auto b = static_cast<std::size_t>(blocks[i]);
    const std::int32_t tree_ref = block_node_[b] != detail::kNoNode ? 1 : 0;
    if (alloc.ref_count(blocks[i]) < tree_ref + scratch_[b]) {
      expects(false, "blocks[i]", blocks[i],
              "has fewer allocator references than the caller passes plus the tree's own (the "
              "caller does not hold it)");
    }
    if (i >= cached_prefix && (tree_ref != 0 || scratch_[b] != 1)) {
      expects(tree_ref == 0, "blocks[i]", blocks[i],
              "is already cached at another position of the tree");
      expects(false, "blocks[i]", blocks[i],
              "is listed more than once (a block is cached at one position only)");
    }
  }
}

inline InsertResult RadixTree::insert(const TokenId* tokens, std::size_t num_tokens,
                                      const BlockId* blocks, std::size_t num_blocks,
                                      NamespaceId ns) {
  const auto bs = static_cast<std::size_t>(block_size_);
  expects_that(num_tokens == num_blocks * bs, "num_tokens = ", num_tokens,
               ": must equal num_blocks * block_size = ", num_blocks, " * ", block_size_);
  expects(tokens != nullptr || num_tokens == 0, "tokens", "null",
          "must point to num_tokens token ids");
  expects(blocks != nullptr || num_blocks == 0, "blocks", "null",
          "must point to num_blocks block ids");
  expects(num_tokens <= static_cast<std::size_t>(INT32_MAX), "num_tokens", num_tokens,
          "must fit int32");

  // Read-only walk: how much is cached already, and where the key leaves the tree.
  NodeIndex node = 0;
  std::size_t pos = 0;
  NodeIndex split_node = detail::kNoNode;
  std::size_t split_at = 0;
  while (pos < num_blocks) {
    const NodeIndex child = find_child(node, tokens + pos * bs, ns);
    if (child == detail::kNoNode) break;
    const std::size_t edge_blocks = node_ref(child).blocks.size();
    const std::size_t m =
        common_blocks(child, tokens + pos * bs, std::min(edge_blocks, num_blocks - pos));
    pos += m;
    if (m < edge_blocks) {
      split_node = child;
      split_at = m;
      break;
    }
    node = child;
  }
  const std::size_t cached_prefix = pos;
  check_insert_blocks(blocks, num_blocks, cached_prefix);

  // Everything is valid: change the tree.
  if (split_node != detail::kNoNode) node = split(split_node, split_at);
  if (pos < num_blocks) {
    const NodeIndex leaf = new_node();
    try {
      detail::RadixNode& l = node_ref(leaf);
      l.tokens.assign(tokens + pos * bs, tokens + num_tokens);
      l.blocks.assign(blocks + pos, blocks + num_blocks);
      l.ns = ns;
      l.key_hash = detail::child_key_hash(node, ns, l.tokens.data(), block_size_);
      index_insert(leaf);  // strong guarantee of try_emplace: the last step that may throw
    } catch (...) {
      free_node(leaf);
      throw;
    }
    detail::RadixNode& l = node_ref(leaf);
    l.start_token = static_cast<std::int32_t>(pos * bs);
    if (is_candidate(node)) policy_->remove(node);  // gains a child
    link_child(node, leaf);
    for (BlockId b : l.blocks) block_node_[static_cast<std::size_t>(b)] = leaf;
    cached_blocks_ += static_cast<std::int32_t>(l.blocks.size());
    node = leaf;
    mark_path(node);
    policy_->add(candidate(leaf));
  } else {
    touch_path(node);
  }
  // The caller's duplicates: the cached blocks win, the caller's references go back.
  for (std::size_t i = 0; i < cached_prefix; ++i) allocator_->release(blocks[i]);

  InsertResult result;
  result.num_tokens = static_cast<std::int32_t>(num_tokens);
  result.num_deduplicated = static_cast<std::int32_t>(cached_prefix);
  result.node = NodeHandle{node};
  return result;
}

inline void RadixTree::lock(NodeHandle node) {
  at(node);
  for (NodeIndex i = node.id; i != detail::kNoNode; i = node_ref(i).parent) {
    detail::RadixNode& n = node_ref(i);
    if (n.lock_count == 0 && i != 0) {
      if (n.num_children == 0) policy_->remove(i);
      locked_blocks_ += static_cast<std::int32_t>(n.blocks.size());
    }
    ++n.lock_count;
  }
  ++node_ref(node.id).own_locks;
}

inline void RadixTree::unlock(NodeHandle node) {
  expects<StateError>(at(node).own_locks > 0, "node", node.id,
                      "is not locked (unlock without a matching lock)");
  --node_ref(node.id).own_locks;
  for (NodeIndex i = node.id; i != detail::kNoNode; i = node_ref(i).parent) {
    detail::RadixNode& n = node_ref(i);
    --n.lock_count;
    if (n.lock_count == 0 && i != 0) {
      locked_blocks_ -= static_cast<std::int32_t>(n.blocks.size());
      if (n.num_children == 0) policy_->add(candidate(i));
    }
  }
}

// Removes the unlocked leaf `i`, dropping the tree's reference on its blocks; its parent becomes
// a candidate if it is now an unlocked leaf. Returns the blocks that reached the free list.
inline std::int32_t RadixTree::evict_leaf(NodeIndex i) {
  policy_->remove(i);
  index_erase(i);
  const NodeIndex parent = node_ref(i).parent;
  unlink_child(i);
  std::int32_t freed = 0;
  for (BlockId b : node_ref(i).blocks) {
    block_node_[static_cast<std::size_t>(b)] = detail::kNoNode;
    if (allocator_->ref_count(b) == 1) ++freed;
    allocator_->release(b);
  }
  cached_blocks_ -= static_cast<std::int32_t>(node_ref(i).blocks.size());
  free_node(i);
  if (is_candidate(parent)) policy_->add(candidate(parent));
  return freed;
}

inline std::int32_t RadixTree::evict(std::int32_t num_blocks) {
  expects(num_blocks >= 0, "num_blocks", num_blocks, "must be >= 0");
  std::int32_t freed = 0;
  while (freed < num_blocks) {
    const std::int32_t victim = policy_->victim();
    if (victim < 0) break;
    freed += evict_leaf(victim);
  }
  evicted_blocks_ += static_cast<std::uint64_t>(freed);
  return freed;
}

}  // namespace radix_attention
