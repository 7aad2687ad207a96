#pragma once
/// @file
/// The prefix-cache members of SequenceManager (add, append_tokens, finish, prefix queries).
/// Included by cache/sequence_manager.hpp; not a public header.
///
/// Strong guarantee: add() decides feasibility with a read-only lookup before it matches (which
/// may split an edge and refreshes LRU times), locks, retains, evicts or allocates; finish()
/// inserts first (the tree checks everything before changing anything) and only then releases.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace radix_attention {

inline SequenceManager::SequenceManager(BlockAllocator& allocator, RadixTree& tree)
    : SequenceManager(allocator, tree.block_size()) {
  expects(&tree.allocator() == &allocator, "tree", "a RadixTree of another allocator",
          "must cache blocks of this manager's allocator");
  tree_ = &tree;
}

inline void SequenceManager::lock_prefix(const detail::SequenceState& st) {
  if (tree_ != nullptr && st.tree.prefix_node.valid()) tree_->lock(st.tree.prefix_node);
}

// Runs in destructors and rollback paths, so it must not throw. A sequence's lock is taken once
// and dropped once here; unlock() fails only if someone unlocked the node behind the manager's
// back, and then it has changed nothing. Ignoring that is safe: the sequence's blocks are held
// by its own allocator references, not by the lock.
inline void SequenceManager::unlock_prefix(const detail::SequenceState& st) noexcept {
  if (tree_ == nullptr || !st.tree.prefix_node.valid()) return;
  try {
    tree_->unlock(st.tree.prefix_node);
  } catch (...) {  // NOLINT(bugprone-empty-catch): see above
  }
}

// Cached blocks in unlocked nodes that evicting would not free for add(): the matched prefix
// (about to be locked) and blocks that forked sequences hold (cached by a relative's finish()
// beyond their own lock). Each counted once. Runs only when the pool is short.
inline std::int32_t SequenceManager::pinned_evictable_blocks(const TokenId* tokens,
                                                             std::size_t lookup,
                                                             NamespaceId ns) const {
  std::vector<BlockId> pinned;
  tree_->peek_prefix(tokens, lookup, ns, &pinned);
  pinned.erase(std::remove_if(pinned.begin(), pinned.end(),
                              [&](BlockId b) { return !tree_->holds_unlocked(b); }),
               pinned.end());
  for (const auto& entry : sequences_) {
    if (!entry.second.tree.forked) continue;
    for (BlockId b : entry.second.blocks) {
      if (tree_->holds_unlocked(b)) pinned.push_back(b);
    }
  }
  std::sort(pinned.begin(), pinned.end());
  return static_cast<std::int32_t>(std::unique(pinned.begin(), pinned.end()) - pinned.begin());
}

inline SequenceId SequenceManager::add(const std::vector<TokenId>& tokens, NamespaceId ns) {
  expects_that<StateError>(tree_ != nullptr,
                           "add() needs a SequenceManager constructed with a RadixTree");
  expects(tokens.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
          "tokens.size()", tokens.size(), "must fit int32 (a context length)");
  const auto num_tokens = static_cast<std::int32_t>(tokens.size());
  // Leave the last prompt token uncached: its forward pass yields the first output's logits.
  const std::size_t lookup = tokens.empty() ? 0 : tokens.size() - 1;

  const PrefixPeek peek = tree_->peek_prefix(tokens.data(), lookup, ns);
  const auto total_blocks = static_cast<std::int32_t>(detail::blocks_for(num_tokens, block_size_));
  const std::int32_t need = total_blocks - peek.num_tokens / block_size_;
  const std::int32_t free_blocks = allocator_->num_free();
  if (need > free_blocks) {
    const std::int32_t reclaimable =
        tree_->evictable_blocks() - pinned_evictable_blocks(tokens.data(), lookup, ns);
    expects_that<CapacityError>(need <= free_blocks + reclaimable, "tokens.size() = ", num_tokens,
                                ": needs ", need, " new blocks (", peek.num_tokens,
                                " tokens cached); only ", free_blocks, " free and ", reclaimable,
                                " evictable from the prefix cache");
  }

  detail::SequenceState fresh;  // every allocation of the state happens before any change
  fresh.tree.tokens = tokens;
  fresh.tree.ns = ns;
  fresh.blocks.reserve(static_cast<std::size_t>(total_blocks));

  const PrefixMatch match = tree_->match_prefix(tokens.data(), lookup, ns);
  tree_->lock(match.node);
  fresh.blocks.assign(match.blocks.begin(), match.blocks.end());
  allocator_->retain(fresh.blocks);  // cached blocks are held (by the tree): cannot fail
  try {
    const std::int32_t short_by = need - allocator_->num_free();
    if (short_by > 0) tree_->evict(short_by);
    allocator_->allocate_into(need, fresh.blocks);
  } catch (...) {
    // Reachable only if someone retains unlocked cached blocks behind the tree's back.
    allocator_->release(match.blocks);
    tree_->unlock(match.node);
    throw;
  }
  fresh.num_tokens = num_tokens;
  fresh.pending_begin = match.num_tokens;
  fresh.tree.prefix_node = match.node;
  fresh.tree.cached_len = match.num_tokens;
  return insert_state(std::move(fresh));  // releases and unlocks if it fails
}

inline void SequenceManager::append_tokens(SequenceId seq, const std::vector<TokenId>& tokens) {
  detail::SequenceState& st = state(seq);
  expects(tokens.size() <= static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
          "tokens.size()", tokens.size(), "must fit int32");
  const bool record = tree_ != nullptr && st.tree.tokens_complete;
  if (record) st.tree.tokens.reserve(st.tree.tokens.size() + tokens.size());  // may throw: first
  append(seq, static_cast<std::int32_t>(tokens.size()));                      // all or nothing
  if (record) {  // append() marked the ids incomplete; these tokens come with theirs
    st.tree.tokens_complete = true;
    st.tree.tokens.insert(st.tree.tokens.end(), tokens.begin(), tokens.end());
  }
}

inline void SequenceManager::finish(SequenceId seq) {
  auto it = sequences_.find(seq);
  expects(it != sequences_.end(), "seq", seq,
          "is not a live sequence (never created, or already finished or released)");
  if (tree_ == nullptr) {
    release(seq);
    return;
  }
  detail::SequenceState& st = it->second;
  const auto bs = static_cast<std::size_t>(block_size_);
  const std::size_t full_blocks = static_cast<std::size_t>(st.num_tokens) / bs;
  const std::size_t cached = std::min(full_blocks, st.tree.tokens.size() / bs);
  // Consumes this sequence's reference on blocks [0, cached); throws before changing anything.
  tree_->insert(st.tree.tokens.data(), cached * bs, st.blocks.data(), cached, st.tree.ns);
  for (std::size_t i = cached; i < st.blocks.size(); ++i) allocator_->release(st.blocks[i]);
  unlock_prefix(st);
  sequences_.erase(it);
  ++num_ended_;
}

inline NodeHandle SequenceManager::prefix_node(SequenceId seq) const {
  const detail::SequenceState& st = state(seq);
  if (tree_ == nullptr) return NodeHandle{};
  return st.tree.prefix_node.valid() ? st.tree.prefix_node : tree_->root();
}

inline std::int32_t SequenceManager::cached_prefix_len(SequenceId seq) const {
  return state(seq).tree.cached_len;
}

}  // namespace radix_attention
