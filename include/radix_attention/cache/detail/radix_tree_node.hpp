#pragma once
/// @file
/// Internals of RadixTree: the node record and the hashing of child keys. Plain C++17.

#include <cstdint>
#include <cstring>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"

namespace radix_attention {

/// Token id of a prompt / generated sequence.
using TokenId = std::int32_t;

/// Cache namespace (LoRA adapter, tenant, cache salt); sequences of different namespaces never
/// share cached blocks. 0 is the default namespace.
using NamespaceId = std::uint64_t;

namespace detail {

/// Index of a node in the tree's node storage; -1 = none.
using NodeIndex = std::int32_t;
inline constexpr NodeIndex kNoNode = -1;

/**
 * One node of the radix tree: an edge of whole blocks hanging below `parent`.
 *
 * Children are an intrusive doubly linked sibling list (O(1) unlink when a leaf is evicted);
 * lookup by key goes through the tree's hash index, whose collision chains run through
 * `hash_next`. Nodes live in one vector and are recycled through a free list, so a NodeIndex
 * stays valid while the node exists.
 */
struct RadixNode {
  std::vector<TokenId> tokens;  ///< edge key: blocks.size() * block_size token ids
  std::vector<BlockId> blocks;  ///< cached blocks of this edge, in token order

  NodeIndex parent = kNoNode;
  NodeIndex first_child = kNoNode;
  NodeIndex next_sibling = kNoNode;
  NodeIndex prev_sibling = kNoNode;
  NodeIndex hash_next = kNoNode;  ///< next node whose child key has the same hash
  std::int32_t num_children = 0;

  std::int32_t start_token = 0;  ///< tokens on the path above this edge
  std::int32_t lock_count = 0;   ///< locks on this node or any descendant (in use while > 0)
  std::int32_t own_locks = 0;    ///< locks taken on this very node (what unlock() may undo)

  std::uint64_t last_access = 0;   ///< logical time of the last match/insert through this node
  std::uint64_t access_count = 0;  ///< matches/inserts through this node
  std::uint64_t key_hash = 0;      ///< hash of (parent, namespace, first block) in the index
  NamespaceId ns = 0;
  bool alive = false;

  std::int32_t end_token() const { return start_token + static_cast<std::int32_t>(tokens.size()); }
};

/// splitmix64 finalizer: spreads the bits of sequential ids / small token ids over the word.
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

/// Hash of a child key: the parent, the namespace and the child's first block of token ids.
/// Equal keys give equal hashes; lookups still compare the tokens, so collisions are harmless.
inline std::uint64_t child_key_hash(NodeIndex parent, NamespaceId ns, const TokenId* first_block,
                                    std::int32_t block_size) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::int32_t i = 0; i < block_size; ++i) {
    h = (h ^ static_cast<std::uint32_t>(first_block[i])) * 0x100000001b3ULL;
  }
  return mix64(h ^ mix64(ns) ^ (static_cast<std::uint64_t>(parent) << 1));
}

/// True if the `n` token ids at `a` and `b` are equal.
inline bool same_tokens(const TokenId* a, const TokenId* b, std::size_t n) {
  return n == 0 || std::memcmp(a, b, n * sizeof(TokenId)) == 0;
}

}  // namespace detail
}  // namespace radix_attention
