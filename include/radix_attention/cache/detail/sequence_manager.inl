#pragma once
/// @file
/// Definitions of SequenceManager (included by cache/sequence_manager.hpp; not a public header).
///
/// The strong exception guarantee is kept by one pattern throughout: everything that can throw
/// (argument checks, memory for the new state, the allocator call that may run out of blocks)
/// happens before the first change that would need undoing, and the few steps after a change are
/// either non-throwing or undone explicitly in a catch block.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

namespace radix_attention {

inline SequenceManager::SequenceManager(BlockAllocator& allocator, std::int32_t block_size)
    : allocator_(&allocator), block_size_(block_size) {
  expects(block_size >= 1, "block_size", block_size, "must be >= 1");
  expects_that(
      std::int64_t{allocator.num_blocks()} * block_size <= std::numeric_limits<std::int32_t>::max(),
      "block_size = ", block_size, ": num_blocks (", allocator.num_blocks(),
      ") * block_size exceeds the int32 range of slot indices");
}

inline SequenceManager::~SequenceManager() {
  for (auto& entry : sequences_) {
    try {
      allocator_->release(entry.second.blocks);
      unlock_prefix(entry.second);
    } catch (...) {
      // Only reachable if someone released this sequence's blocks behind its back; a destructor
      // must not throw, and the remaining sequences should still give their blocks back.
    }
  }
}

inline detail::SequenceState& SequenceManager::state(SequenceId seq, const char* name) {
  auto it = sequences_.find(seq);
  expects(it != sequences_.end(), name, seq,
          "is not a live sequence (never created, or already released)");
  return it->second;
}

inline const detail::SequenceState& SequenceManager::state(SequenceId seq, const char* name) const {
  auto it = sequences_.find(seq);
  expects(it != sequences_.end(), name, seq,
          "is not a live sequence (never created, or already released)");
  return it->second;
}

// Takes ownership of `new_state`, whose blocks the caller has already allocated/retained: on
// failure (out of memory for the map node) those references are given back, so the caller has
// nothing to undo.
inline SequenceId SequenceManager::insert_state(detail::SequenceState&& new_state) {
  const SequenceId id = next_id_;
  try {
    // Default-construct first and move in afterwards: if emplacing throws, `new_state` is intact
    // (its blocks are still known) and can be released.
    auto slot = sequences_.try_emplace(id).first;
    slot->second = std::move(new_state);
  } catch (...) {
    allocator_->release(new_state.blocks);
    unlock_prefix(new_state);
    throw;
  }
  ++next_id_;
  return id;
}

inline SequenceId SequenceManager::create(std::int32_t num_tokens) {
  expects(num_tokens >= 0, "num_tokens", num_tokens, "must be >= 0");
  detail::SequenceState fresh;
  fresh.num_tokens = num_tokens;
  fresh.pending_begin = 0;
  fresh.tree.tokens_complete = num_tokens == 0;  // no ids for these tokens: nothing to cache
  // blocks_for(<= INT32_MAX, >= 1) fits int32.
  allocator_->allocate_into(static_cast<std::int32_t>(detail::blocks_for(num_tokens, block_size_)),
                            fresh.blocks);
  return insert_state(std::move(fresh));
}

inline void SequenceManager::append(SequenceId seq, std::int32_t num_tokens) {
  detail::SequenceState& st = state(seq);
  expects(num_tokens >= 0, "num_tokens", num_tokens, "must be >= 0");
  detail::check_context_fits(st.num_tokens, num_tokens, "num_tokens");
  if (num_tokens == 0) return;
  if (detail::partial_tokens(st.num_tokens, block_size_) != 0) {
    // The tokens go into the partial last block first; it must be this sequence's alone.
    const BlockId last = st.blocks.back();
    expects_that<StateError>(allocator_->ref_count(last) == 1, "seq = ", seq,
                             ": its partially filled last block ", last, " has ",
                             allocator_->ref_count(last),
                             " holders; appending would overwrite a block others read");
  }
  // allocate_into is all-or-nothing, including the growth of st.blocks.
  allocator_->allocate_into(detail::blocks_to_grow(st.num_tokens, num_tokens, block_size_),
                            st.blocks);
  st.num_tokens += num_tokens;
  st.tree.tokens_complete = false;  // tokens without ids (append_tokens restores the flag)
}

inline ForkResult SequenceManager::fork(SequenceId parent) {
  const detail::SequenceState& src =
      state(parent, "parent seq");  // names the argument, reads "seq = <id>" like every other
  const std::int32_t partial = detail::partial_tokens(src.num_tokens, block_size_);
  const auto num_full = static_cast<std::size_t>(src.num_tokens / block_size_);

  detail::SequenceState child;
  child.num_tokens = src.num_tokens;
  child.pending_begin = src.num_tokens;
  child.blocks.reserve(src.blocks.size());
  child.blocks.assign(src.blocks.begin(),
                      src.blocks.begin() + static_cast<std::ptrdiff_t>(num_full));
  child.tree = src.tree;  // token ids, namespace, prefix node (locked for the child below)
  child.tree.forked = true;
  ForkResult result;
  if (partial != 0) result.copies.reserve(1);

  // The only step that can fail for lack of blocks comes first; retaining held blocks cannot.
  if (partial != 0) allocator_->allocate_into(1, child.blocks);
  std::size_t retained = 0;
  try {
    for (; retained < num_full; ++retained) allocator_->retain(child.blocks[retained]);
  } catch (...) {
    // Unreachable while the invariants hold (the parent holds its blocks); undone anyway.
    for (std::size_t i = 0; i < retained; ++i) allocator_->release(child.blocks[i]);
    if (partial != 0) allocator_->release(child.blocks.back());
    throw;
  }
  lock_prefix(child);  // cannot fail: the parent's lock keeps the node alive
  if (partial != 0)
    result.copies.push_back(BlockCopy{src.blocks.back(), child.blocks.back(), partial});
  result.child = insert_state(std::move(child));
  state(parent).tree.forked = true;  // shares blocks now (see TreeSequenceState::forked)
  return result;
}

inline void SequenceManager::release(SequenceId seq) {
  auto it = sequences_.find(seq);
  expects(it != sequences_.end(), "seq", seq,
          "is not a live sequence (never created, or already released)");
  allocator_->release(it->second.blocks);  // all or nothing
  unlock_prefix(it->second);
  sequences_.erase(it);
  ++num_ended_;
}

inline std::int32_t SequenceManager::context_len(SequenceId seq) const {
  return state(seq).num_tokens;
}

inline const std::vector<BlockId>& SequenceManager::blocks(SequenceId seq) const {
  return state(seq).blocks;
}

inline BlockTables SequenceManager::export_block_tables(const std::vector<SequenceId>& seqs,
                                                        std::int32_t max_blocks_per_seq) const {
  expects(max_blocks_per_seq >= 0, "max_blocks_per_seq", max_blocks_per_seq,
          "must be >= 0 (0 = the longest sequence of the batch)");
  std::vector<const detail::SequenceState*> rows;
  rows.reserve(seqs.size());
  std::size_t longest = 0;
  for (SequenceId seq : seqs) {
    rows.push_back(&state(seq));
    longest = std::max(longest, rows.back()->blocks.size());
  }
  std::int32_t width = max_blocks_per_seq;
  if (width == 0) {
    width = static_cast<std::int32_t>(std::max<std::size_t>(longest, 1));
  } else {
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      expects_that(rows[i]->blocks.size() <= static_cast<std::size_t>(width), "seq = ", seqs[i],
                   " (seqs[", i, "]) has ", rows[i]->blocks.size(),
                   " blocks: exceeds max_blocks_per_seq = ", width);
    }
  }
  expects_that(seqs.size() * static_cast<std::size_t>(width) <=
                   static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()),
               "seqs.size() = ", seqs.size(), " rows of max_blocks_per_seq = ", width,
               " entries exceed the int32 index range of a device block table");

  BlockTables out;
  out.num_seqs = static_cast<std::int32_t>(seqs.size());
  out.max_blocks_per_seq = width;
  out.block_tables.assign(seqs.size() * static_cast<std::size_t>(width), kBlockTablePadding);
  out.context_lens.resize(seqs.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy(rows[i]->blocks.begin(), rows[i]->blocks.end(),
              out.block_tables.begin() +
                  static_cast<std::ptrdiff_t>(i * static_cast<std::size_t>(width)));
    out.context_lens[i] = rows[i]->num_tokens;
  }
  return out;
}

inline std::vector<std::int32_t> SequenceManager::take_slot_mapping(
    const std::vector<SequenceId>& seqs) {
  std::vector<detail::SequenceState*> rows;
  rows.reserve(seqs.size());
  std::size_t total = 0;
  for (SequenceId seq : seqs) {
    rows.push_back(&state(seq));
    total += static_cast<std::size_t>(rows.back()->num_tokens - rows.back()->pending_begin);
  }
  {
    // A sequence listed twice would get its slots written twice in one kernel launch (and the
    // second listing would silently be empty): reject it.
    std::vector<SequenceId> sorted(seqs);
    std::sort(sorted.begin(), sorted.end());
    auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    expects(dup == sorted.end(), "seq", dup == sorted.end() ? SequenceId{0} : *dup,
            "is listed more than once in seqs");
  }

  std::vector<std::int32_t> slots;
  slots.reserve(total);
  for (detail::SequenceState* st : rows) {
    for (std::int32_t t = st->pending_begin; t < st->num_tokens; ++t) {
      slots.push_back(st->blocks[static_cast<std::size_t>(t / block_size_)] * block_size_ +
                      t % block_size_);
    }
  }
  // Nothing below throws: the take is committed only once the result exists.
  for (detail::SequenceState* st : rows) st->pending_begin = st->num_tokens;
  return slots;
}

}  // namespace radix_attention
