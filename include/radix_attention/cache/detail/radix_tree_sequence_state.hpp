#pragma once
/// @file
/// Prefix-cache part of SequenceManager's per-sequence state. Internal.

#include <cstdint>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"

namespace radix_attention {
namespace detail {

/// @brief What a tree-aware SequenceManager keeps per sequence: the token ids (so that finish()
/// can insert the blocks under their key), the namespace, and the locked prefix node.
struct TreeSequenceState {
  std::vector<TokenId> tokens;  ///< ids of the first tokens.size() tokens of the context
  bool tokens_complete = true;  ///< false once tokens were added without ids: stop recording
  NamespaceId ns = 0;
  NodeHandle prefix_node;       ///< locked node of the cached prefix; invalid = no lock held
  std::int32_t cached_len = 0;  ///< tokens that came from the cache at add()
  /// Shares blocks with a fork relative. Once one of them finishes, shared blocks can be cached
  /// in nodes this sequence has not locked; add() then does not count them as evictable.
  bool forked = false;
};

}  // namespace detail
}  // namespace radix_attention
