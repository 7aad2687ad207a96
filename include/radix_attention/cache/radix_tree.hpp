#pragma once
/// @file
/// RadixTree: the prefix cache. A radix tree over token ids whose edges hold whole KV blocks,
/// so a new request reuses every block of its longest cached prefix. Plain C++17.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/detail/radix_tree_node.hpp"
#include "radix_attention/cache/eviction_policy.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention {

/// @brief Names a node of a RadixTree; stable while the node exists (an edge split keeps the
/// handle on the lower part, whose path still ends at the same token). The root has a handle.
struct NodeHandle {
  std::int32_t id = -1;
  bool valid() const { return id >= 0; }
  friend bool operator==(NodeHandle a, NodeHandle b) { return a.id == b.id; }
  friend bool operator!=(NodeHandle a, NodeHandle b) { return a.id != b.id; }
};

/// @brief Result of RadixTree::match_prefix.
struct PrefixMatch {
  std::int32_t num_tokens = 0;  ///< matched tokens, a multiple of block_size
  /// The num_tokens / block_size cached blocks, in order. Not retained for the caller: a caller
  /// that keeps them retains them (and locks `node` so that they are not evicted).
  std::vector<BlockId> blocks;
  NodeHandle node;  ///< deepest matched node, its path ends exactly at num_tokens; root if none
};

/// @brief Result of RadixTree::insert.
struct InsertResult {
  std::int32_t num_tokens = 0;        ///< tokens now cached for this key (= blocks * block_size)
  std::int32_t num_deduplicated = 0;  ///< caller blocks whose position was already cached
  NodeHandle node;                    ///< node whose path ends at num_tokens
};

/// @brief Result of RadixTree::peek_prefix.
struct PrefixPeek {
  std::int32_t num_tokens = 0;       ///< cached prefix length, a multiple of block_size
  std::int32_t unlocked_blocks = 0;  ///< of its blocks, those in unlocked (evictable) nodes
};

/// @brief Token range [begin, end) of a node's edge, counted from the root.
struct TokenRange {
  std::int32_t begin = 0;
  std::int32_t end = 0;
};

/// @brief Counters of a RadixTree. cached == evictable + locked always.
struct RadixTreeStats {
  std::int32_t num_nodes = 0;         ///< live nodes, the root included
  std::int32_t cached_blocks = 0;     ///< blocks held by the tree
  std::int32_t evictable_blocks = 0;  ///< cached blocks in unlocked nodes
  std::int32_t locked_blocks = 0;    ///< cached blocks in locked nodes (or with locked descendants)
  std::uint64_t hit_tokens = 0;      ///< tokens match_prefix found cached
  std::uint64_t miss_tokens = 0;     ///< tokens match_prefix was asked for but did not find
  std::uint64_t evicted_blocks = 0;  ///< blocks evict() returned to the free list, in total
  /// hit_tokens / (hit_tokens + miss_tokens), 0 before the first lookup.
  double hit_rate() const {
    const std::uint64_t total = hit_tokens + miss_tokens;
    return total == 0 ? 0.0 : static_cast<double>(hit_tokens) / static_cast<double>(total);
  }
};

/**
 * @brief Prefix cache over a BlockAllocator: a radix tree whose edges are whole blocks.
 *
 * Reference counting: the tree holds exactly one allocator reference on every block it caches
 * (each block is cached at most once). Locks are separate: lock(node) marks the node and its
 * ancestors in use; locked nodes are never evicted. A caller that keeps matched blocks retains
 * them and locks the match's node.
 *
 * Keys: every key is in a namespace; children are found through a hash of (parent, namespace,
 * first block of token ids) and confirmed with memcmp, so block_size 1 (token-level) needs no
 * per-token nodes: edges are compressed as in any radix tree. Different namespaces never share
 * a node, whatever their tokens.
 *
 * Eviction: unlocked leaves are the candidates, kept incrementally by the EvictionPolicy (LRU by
 * default); evicting a leaf may make its parent a candidate (cascade). O(log n) per evicted node.
 *
 * Errors: every operation checks its arguments before changing anything and throws a typed
 * exception (InvalidArgument, StateError), leaving the tree and the allocator as they were.
 * The allocator must outlive the tree; the destructor releases the tree's references.
 * Not thread-safe: one scheduler thread owns the tree, its allocator and its managers.
 */
class RadixTree {
 public:
  /// @param allocator pool of the cached blocks; must outlive the tree.
  /// @param block_size tokens per block, >= 1.
  /// @param policy eviction policy; nullptr selects LruPolicy.
  /// @throw InvalidArgument if block_size < 1.
  RadixTree(BlockAllocator& allocator, std::int32_t block_size,
            std::unique_ptr<EvictionPolicy> policy = nullptr);
  RadixTree(const RadixTree&) = delete;  // two owners would release the cached blocks twice
  RadixTree& operator=(const RadixTree&) = delete;
  /// @brief Releases the tree's reference on every cached block. Never throws: a block that is
  /// already free (its reference was released behind the tree's back) is skipped.
  ~RadixTree() noexcept;

  std::int32_t block_size() const { return block_size_; }
  BlockAllocator& allocator() const { return *allocator_; }

  /// @brief Longest cached prefix of `tokens` in namespace `ns`, in whole blocks.
  ///
  /// Splits an edge at a block boundary when the match ends inside it, so the returned node's
  /// path ends exactly at the match. Marks the path as used now (LRU) and counts the matched
  /// tokens as hits and the others (a trailing partial block included) as misses.
  /// @param tokens token ids; may be null only if num_tokens == 0.
  /// @throw InvalidArgument if tokens is null and num_tokens > 0.
  PrefixMatch match_prefix(const TokenId* tokens, std::size_t num_tokens, NamespaceId ns = 0);
  /// @brief match_prefix(tokens.data(), tokens.size(), ns).
  PrefixMatch match_prefix(const std::vector<TokenId>& tokens, NamespaceId ns = 0) {
    return match_prefix(tokens.data(), tokens.size(), ns);
  }

  /// @brief Read-only longest-prefix lookup: what match_prefix would return, without splitting,
  /// LRU update or statistics. Lets a caller decide feasibility before changing anything.
  /// @throw InvalidArgument if tokens is null and num_tokens > 0.
  /// @param blocks if not null, receives the matched blocks (cleared first).
  PrefixPeek peek_prefix(const TokenId* tokens, std::size_t num_tokens, NamespaceId ns = 0,
                         std::vector<BlockId>* blocks = nullptr) const;

  /// @brief Caches `blocks` as the KV blocks of `tokens` in namespace `ns`.
  ///
  /// Consumes one caller reference on every block: a block whose position is new keeps it as the
  /// tree's reference; a duplicate (position already cached, by this or another block id) has it
  /// released to the allocator. Splits an edge at a block boundary where the key diverges inside
  /// it. Marks the path as used now.
  /// @param num_tokens must equal num_blocks * block_size.
  /// @throw InvalidArgument on a count mismatch, a null pointer with a non-zero count, a block id
  /// the caller does not hold (foreign, free, or held only by the tree), or a block for a new
  /// position that the tree already caches elsewhere or that is listed twice.
  InsertResult insert(const TokenId* tokens, std::size_t num_tokens, const BlockId* blocks,
                      std::size_t num_blocks, NamespaceId ns = 0);
  /// @brief insert(tokens.data(), tokens.size(), blocks.data(), blocks.size(), ns).
  InsertResult insert(const std::vector<TokenId>& tokens, const std::vector<BlockId>& blocks,
                      NamespaceId ns = 0) {
    return insert(tokens.data(), tokens.size(), blocks.data(), blocks.size(), ns);
  }

  /// @brief Adds one lock on `node` (and marks every ancestor in use): none of them is evicted
  /// until the matching unlock(). Locking the root is allowed and protects nothing.
  /// @throw InvalidArgument if `node` is not a live node of this tree.
  void lock(NodeHandle node);
  /// @brief Undoes one lock(node).
  /// @throw InvalidArgument if `node` is not live; StateError if `node` itself holds no lock.
  void unlock(NodeHandle node);

  /// @brief Evicts unlocked leaves, least recently used first (per the policy), cascading to
  /// parents that become unlocked leaves, until at least `num_blocks` blocks have returned to the
  /// free list or nothing is left to evict. Whole nodes are evicted, so more may be freed.
  /// @return blocks returned to the allocator's free list.
  /// @throw InvalidArgument if num_blocks < 0.
  std::int32_t evict(std::int32_t num_blocks);

  /// @brief Cached blocks in unlocked nodes: what evict() can return to the free list, provided
  /// no one retains them without locking their node (SequenceManager always locks).
  std::int32_t evictable_blocks() const { return cached_blocks_ - locked_blocks_; }
  std::int32_t cached_blocks() const { return cached_blocks_; }
  std::int32_t locked_blocks() const { return locked_blocks_; }
  std::uint64_t hit_tokens() const { return hit_tokens_; }
  std::uint64_t miss_tokens() const { return miss_tokens_; }
  /// @brief All counters at once.
  RadixTreeStats stats() const;
  /// @brief Zeroes the hit / miss / evicted counters (the block counters are state, not stats).
  void reset_stats() { hit_tokens_ = miss_tokens_ = evicted_blocks_ = 0; }
  /// @brief True if the tree caches `block`.
  bool holds(BlockId block) const {
    return block >= 0 && static_cast<std::size_t>(block) < block_node_.size() &&
           block_node_[static_cast<std::size_t>(block)] != detail::kNoNode;
  }
  /// @brief True if the tree caches `block` in an unlocked node (evict() may drop it).
  bool holds_unlocked(BlockId block) const {
    return holds(block) && node_ref(block_node_[static_cast<std::size_t>(block)]).lock_count == 0;
  }

  // ---- read-only traversal (tests, batch planner). Handles are checked: InvalidArgument if not
  // ---- a live node of this tree.
  NodeHandle root() const { return NodeHandle{0}; }
  /// @brief Live nodes, the root included.
  std::int32_t num_nodes() const { return num_nodes_; }
  /// @brief Parent of `node`; an invalid handle for the root.
  NodeHandle parent(NodeHandle node) const;
  /// @brief Children of `node` (no particular order).
  std::vector<NodeHandle> children(NodeHandle node) const;
  std::int32_t num_children(NodeHandle node) const { return at(node).num_children; }
  /// @brief Token positions [begin, end) of the node's edge on its path from the root.
  TokenRange token_range(NodeHandle node) const;
  /// @brief Token ids of the node's edge (empty for the root).
  const std::vector<TokenId>& edge_tokens(NodeHandle node) const { return at(node).tokens; }
  /// @brief Blocks cached on the node's edge (empty for the root).
  const std::vector<BlockId>& node_blocks(NodeHandle node) const { return at(node).blocks; }
  /// @brief All blocks from the root down to `node`, in token order.
  std::vector<BlockId> path_blocks(NodeHandle node) const;
  /// @brief Nodes from the root (first) down to `node` (last).
  std::vector<NodeHandle> path(NodeHandle node) const;
  /// @brief Edges between the root and `node` (root: 0).
  std::int32_t depth(NodeHandle node) const;
  NamespaceId node_namespace(NodeHandle node) const { return at(node).ns; }
  /// @brief Locks on `node` or any of its descendants (the node is in use while > 0).
  std::int32_t lock_count(NodeHandle node) const { return at(node).lock_count; }
  std::uint64_t last_access(NodeHandle node) const { return at(node).last_access; }
  /// @brief True if `node` is a live node of this tree.
  bool contains(NodeHandle node) const {
    return node.id >= 0 && static_cast<std::size_t>(node.id) < nodes_.size() &&
           nodes_[static_cast<std::size_t>(node.id)].alive;
  }
  const EvictionPolicy& policy() const { return *policy_; }

  /// @brief Checks every invariant: tree links and keys, namespace and token ranges, the child
  /// index, lock counts, block counters (evictable + locked == cached), one tree reference per
  /// cached block and no cached block free in the allocator, the policy's candidate set, LRU
  /// times non-increasing downwards. O(nodes + cached tokens + pool size).
  /// @throw StateError naming the first violated invariant.
  void validate() const;

 private:
  using NodeIndex = detail::NodeIndex;

  const detail::RadixNode& at(NodeHandle node) const;
  detail::RadixNode& node_ref(NodeIndex i) { return nodes_[static_cast<std::size_t>(i)]; }
  const detail::RadixNode& node_ref(NodeIndex i) const {
    return nodes_[static_cast<std::size_t>(i)];
  }

  NodeIndex find_child(NodeIndex parent, const TokenId* first_block, NamespaceId ns) const;
  std::size_t common_blocks(NodeIndex node, const TokenId* tokens, std::size_t max_blocks) const;
  NodeIndex new_node();
  void free_node(NodeIndex i);
  void index_insert(NodeIndex i);
  void index_erase(NodeIndex i);
  void index_replace(NodeIndex old_node, NodeIndex new_node);
  void link_child(NodeIndex parent, NodeIndex child);
  void unlink_child(NodeIndex child);
  NodeIndex split(NodeIndex node, std::size_t keep_blocks);
  void mark_path(NodeIndex node);
  void touch_path(NodeIndex node);
  bool is_candidate(NodeIndex i) const;
  EvictionCandidate candidate(NodeIndex i) const;
  std::int32_t evict_leaf(NodeIndex i);
  void check_insert_blocks(const BlockId* blocks, std::size_t num_blocks,
                           std::size_t cached_prefix) const;

  BlockAllocator* allocator_;
  std::int32_t block_size_;
  std::unique_ptr<EvictionPolicy> policy_;

  std::vector<detail::RadixNode> nodes_;  // [0] is the root
  std::vector<NodeIndex> free_nodes_;
  std::int32_t num_nodes_ = 0;
  std::unordered_map<std::uint64_t, NodeIndex> index_;  // child key hash -> chain head

  std::vector<NodeIndex> block_node_;          // by block id: node caching it, or kNoNode
  mutable std::vector<std::int32_t> scratch_;  // by block id: counts during insert's checks

  std::int32_t cached_blocks_ = 0;
  std::int32_t locked_blocks_ = 0;
  std::uint64_t clock_ = 0;
  std::uint64_t hit_tokens_ = 0;
  std::uint64_t miss_tokens_ = 0;
  std::uint64_t evicted_blocks_ = 0;
};

}  // namespace radix_attention

#include "radix_attention/cache/detail/radix_tree_operations.hpp"
#include "radix_attention/cache/detail/radix_tree_structure.hpp"
#include "radix_attention/cache/detail/radix_tree_validate.hpp"
