#pragma once
/// @file
/// SequenceManager: per-sequence block tables over a BlockAllocator — create, append, fork,
/// release — and their export as the device-ready int32 arrays the kernels read. With a
/// RadixTree, requests reuse cached prefixes (add) and leave their blocks cached (finish).
/// Plain C++17.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/detail/sequence_state.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention {

/// Identifies a sequence (a request) of a SequenceManager. Ids are never reused, so a stale id
/// is always detected instead of silently naming a newer sequence.
using SequenceId = std::int64_t;

/// @brief One block copy the caller executes on the GPU: copy the first `num_tokens` token slots
/// of block `src` into block `dst`, in both the K and the V cache.
struct BlockCopy {
  BlockId src = 0;
  BlockId dst = 0;
  std::int32_t num_tokens = 0;
};

/// @brief Result of SequenceManager::fork: the new sequence and the block copies that must run on
/// the GPU before the child's KV cache is read or appended to.
struct ForkResult {
  SequenceId child = 0;
  std::vector<BlockCopy> copies;
};

/// Value of the unused entries of a block-table row. Not a block id: a kernel that reads past
/// `ceil(context_len / block_size)` entries faults (and compute-sanitizer reports it) instead of
/// silently reading another sequence's block 0.
inline constexpr std::int32_t kBlockTablePadding = -1;

/// @brief Device-ready block tables of a batch (docs/architecture.md, "Data contracts"), owning
/// their host arrays: token `t` of row `s` lives in block `block_tables[s * max_blocks_per_seq +
/// t / block_size]` at offset `t % block_size`. Entries past a row's `ceil(context_lens[s] /
/// block_size)` blocks hold kBlockTablePadding. Functions take the arrays as a BlockTableView
/// (view()), the one block-table type of the library.
struct BlockTables {
  std::int32_t num_seqs = 0;
  /// Usable entries per row, as in BlockTableView; rows are dense, so it is also their stride.
  std::int32_t max_blocks_per_seq = 0;
  std::vector<std::int32_t> block_tables;  ///< [num_seqs * max_blocks_per_seq]
  std::vector<std::int32_t> context_lens;  ///< [num_seqs]

  /// @brief The arrays as a BlockTableView (row_stride = max_blocks_per_seq; valid while this
  /// object is alive and unchanged).
  /// @throw InvalidArgument if the sizes disagree (num_seqs or max_blocks_per_seq < 0,
  /// context_lens.size() != num_seqs, block_tables.size() != num_seqs * max_blocks_per_seq).
  BlockTableView view() const {
    expects(num_seqs >= 0, "tables.num_seqs", num_seqs, "must be >= 0");
    expects(max_blocks_per_seq >= 0, "tables.max_blocks_per_seq", max_blocks_per_seq,
            "must be >= 0");
    expects(context_lens.size() == static_cast<std::size_t>(num_seqs), "tables.context_lens.size()",
            context_lens.size(), "must equal num_seqs");
    expects(block_tables.size() ==
                static_cast<std::size_t>(num_seqs) * static_cast<std::size_t>(max_blocks_per_seq),
            "tables.block_tables.size()", block_tables.size(),
            "must equal num_seqs * max_blocks_per_seq");
    return BlockTableView{block_tables.data(), context_lens.data(), num_seqs,
                          max_blocks_per_seq,  max_blocks_per_seq,  -1};
  }
};

/**
 * @brief Block tables of the live sequences, built on a BlockAllocator.
 *
 * Reference counting: every live sequence holds one allocator reference on each block of its
 * block list. Full blocks may be shared (fork retains them); the partially filled last block of
 * a sequence, the only one that is written to, is always held by that sequence alone (fork copies
 * it), so appending never writes into a block another holder reads. A live sequence's block list
only ever grows at its end: no operation replaces an entry (BatchPlanner relies on this to read
only each row's new entries per step).
 *
 * Every operation either succeeds completely or throws and changes nothing: neither this object
 * nor the allocator. The allocator must outlive the manager; the destructor releases the blocks
 * of the sequences still live.
 *
 * Slot mapping: the tokens a sequence gains through create/append are "pending" until
 * take_slot_mapping() returns their slots (block * block_size + offset), which the caller then
 * writes with the kv_append kernel.
 *
 * Prefix cache (constructed with a RadixTree): add() matches the longest cached prefix of a
 * prompt, locks its tree node and retains its blocks (only the other tokens are pending), and
 * evicts from the tree when the pool is short; append_tokens() records generated token ids;
 * finish() inserts the sequence's full blocks into the tree (the tree takes over those
 * references) and unlocks; abort()/release() drop the sequence without caching. A live sequence
 * always holds a lock on the node of its cached prefix, so those blocks are never evicted under
 * it; fork() takes one more lock for the child. The tree must outlive the manager.
 */
class BatchPlanner;

class SequenceManager {
 public:
  /// @param allocator pool the blocks come from; must outlive this object.
  /// @param block_size tokens per block, >= 1.
  /// @throw InvalidArgument if block_size < 1, or if allocator.num_blocks() * block_size does not
  /// fit int32 (slots are int32 on the device).
  SequenceManager(BlockAllocator& allocator, std::int32_t block_size);

  /// @brief A manager whose sequences share prefixes through `tree` (block_size from the tree).
  /// @param allocator the tree's allocator; must outlive this object.
  /// @param tree prefix cache; must outlive this object.
  /// @throw InvalidArgument if `tree` caches blocks of another allocator, or as the other
  /// constructor.
  SequenceManager(BlockAllocator& allocator, RadixTree& tree);

  SequenceManager(const SequenceManager&) = delete;  // two owners would release blocks twice
  SequenceManager& operator=(const SequenceManager&) = delete;
  ~SequenceManager();

  std::int32_t block_size() const { return block_size_; }
  const BlockAllocator& allocator() const { return *allocator_; }
  /// @brief The prefix cache, or nullptr for a manager without one.
  RadixTree* tree() const { return tree_; }

  /// @brief Adds a request with prompt `tokens` in cache namespace `ns`: matches the longest
  /// cached prefix, locks its node and retains its blocks, and allocates blocks for the rest,
  /// evicting least recently used cache entries if the pool is short. At least the last prompt
  /// token is always left to compute (the model needs its logits), so at most
  /// floor((size - 1) / block_size) blocks come from the cache. The uncached tokens are pending
  /// in the slot mapping.
  /// @param tokens prompt token ids (may be empty).
  /// @param ns cache namespace; prefixes are shared only within one namespace.
  /// @return the new sequence's id.
  /// @throw StateError if the manager has no tree; InvalidArgument if the prompt is longer than
  /// int32; CapacityError if free blocks plus everything evictable (the matched prefix aside)
  /// cannot hold the rest of the prompt. Nothing changes on any error (not even LRU times): the
  /// check runs before the match, and counts as evictable only cached blocks that eviction would
  /// free (not the matched prefix, nor blocks that forked sequences still share). It assumes that
  /// no one but this manager's sequences retains cached blocks without locking their node.
  SequenceId add(const std::vector<TokenId>& tokens, NamespaceId ns = 0);

  /// @brief append(seq, tokens.size()), also recording the token ids, so that finish() can cache
  /// the sequence's blocks. Ids are recorded only while the sequence's ids are all known (not
  /// after create() with tokens or a plain append()).
  /// @throw as append(); nothing is appended or recorded on any error.
  void append_tokens(SequenceId seq, const std::vector<TokenId>& tokens);

  /// @brief Ends `seq` and caches it: its full blocks whose token ids are known are inserted into
  /// the tree (the tree takes over those references; positions cached meanwhile by another
  /// request keep the cached block and this one is released), the rest (the partial last block)
  /// are released, the prefix lock is dropped and the id becomes invalid. Without a tree: the
  /// same as release().
  /// @throw InvalidArgument if seq is not live (nothing changes).
  void finish(SequenceId seq);

  /// @brief Ends `seq` without caching anything (release() under another name).
  /// @throw InvalidArgument if seq is not live.
  void abort(SequenceId seq) { release(seq); }

  /// @brief The locked tree node of `seq`'s cached prefix: the root if nothing was cached or the
  /// sequence was created without tokens; an invalid handle for a manager without a tree.
  /// @throw InvalidArgument if seq is not live.
  NodeHandle prefix_node(SequenceId seq) const;

  /// @brief Tokens of `seq` that came from the cache when it was added (a multiple of the block
  /// size; 0 without a tree).
  /// @throw InvalidArgument if seq is not live.
  std::int32_t cached_prefix_len(SequenceId seq) const;

  /// @brief Creates a sequence of `num_tokens` tokens, allocating ceil(num_tokens / block_size)
  /// blocks; all its tokens are pending in the slot mapping.
  /// @param num_tokens initial context length, >= 0 (0: no block until the first append).
  /// @return the new sequence's id.
  /// @throw InvalidArgument if num_tokens < 0; CapacityError if the pool lacks the blocks.
  SequenceId create(std::int32_t num_tokens);

  /// @brief Appends `num_tokens` tokens to `seq`, allocating new blocks when the last one fills.
  /// @param seq a live sequence.
  /// @param num_tokens tokens to add, >= 0.
  /// @throw InvalidArgument if seq is not live, num_tokens < 0, or the context would overflow
  /// int32; StateError if the partially filled last block has another holder (someone retained
  /// it: writing would change what they read); CapacityError if the pool lacks the new blocks.
  /// Nothing is appended on any error.
  void append(SequenceId seq, std::int32_t num_tokens = 1);

  /// @brief Forks `parent` (parallel sampling, beam search): the child has the same context.
  ///
  /// The child shares the parent's full blocks (one more reference each). A partially filled last
  /// block is copied: the child gets a fresh block and the returned copy list says what to copy
  /// on the GPU. The copy reads the parent's block as it is, so the parent's pending tokens must
  /// be written (take_slot_mapping + kv_append) before the copies run. The child starts with no
  /// pending tokens.
  /// With a tree, the child inherits the recorded token ids and also locks the parent's prefix
  /// node (the blocks it shares from the cache stay protected when the parent finishes).
  /// @param parent a live sequence.
  /// @return the child's id and the copies (empty, or one BlockCopy for the last block).
  /// @throw InvalidArgument if parent is not live; CapacityError if no block is free for the copy.
  ForkResult fork(SequenceId parent);

  /// @brief Drops `seq`, releasing its reference on each of its blocks (blocks no one else holds
  /// return to the free list) and its prefix lock; nothing is cached. The id is invalid
  /// afterwards.
  /// @throw InvalidArgument if seq is not live.
  void release(SequenceId seq);

  /// @brief Context length of `seq` in tokens.
  /// @throw InvalidArgument if seq is not live.
  std::int32_t context_len(SequenceId seq) const;

  /// @brief Block list of `seq`, in token order (valid until the next call that modifies `seq`).
  /// @throw InvalidArgument if seq is not live.
  const std::vector<BlockId>& blocks(SequenceId seq) const;

  /// @brief Identifies this manager among all managers of the process (never reused, unlike an
  /// address), so that a cache keyed by SequenceId (BatchPlanner) detects another manager.
  std::uint64_t instance_id() const { return instance_id_; }

  /// @brief Sequences ended so far (release, abort, finish). While it stays the same, every
  /// sequence that was live is still live, so per-sequence lookups can be cached (BatchPlanner).
  std::uint64_t num_ended() const { return num_ended_; }

  /// @brief True if `seq` is a live sequence of this manager.
  bool contains(SequenceId seq) const { return sequences_.count(seq) != 0; }

  /// @brief Number of live sequences.
  std::size_t num_sequences() const { return sequences_.size(); }

  /// @brief Block tables and context lengths of `seqs`, row i for seqs[i] (repeats allowed).
  /// @param seqs live sequences.
  /// @param max_blocks_per_seq row stride; 0 means the longest row of this batch (at least 1, so
  /// the arrays of a non-empty batch are never empty).
  /// @throw InvalidArgument if a seq is not live, max_blocks_per_seq < 0, a sequence needs more
  /// than max_blocks_per_seq blocks, or the table would exceed int32 indexing.
  BlockTables export_block_tables(const std::vector<SequenceId>& seqs,
                                  std::int32_t max_blocks_per_seq = 0) const;

  /// @brief Slots (block * block_size + offset) of the pending tokens of `seqs` — those added by
  /// create/append since the last take — concatenated in `seqs` order, in token order within a
  /// sequence; they are no longer pending afterwards.
  /// @param seqs live sequences, each listed at most once.
  /// @throw InvalidArgument if a seq is not live or listed twice (nothing is taken then).
  std::vector<std::int32_t> take_slot_mapping(const std::vector<SequenceId>& seqs);

 private:
  friend class BatchPlanner;  // reads the states of a batch's sequences without a lookup each

  detail::SequenceState& state(SequenceId seq, const char* name = "seq");
  const detail::SequenceState& state(SequenceId seq, const char* name = "seq") const;
  SequenceId insert_state(detail::SequenceState&& state);
  // Prefix-cache hooks (no-ops without a tree): the lock a live sequence holds on its prefix.
  void lock_prefix(const detail::SequenceState& state);
  void unlock_prefix(const detail::SequenceState& state) noexcept;
  std::int32_t pinned_evictable_blocks(const TokenId* tokens, std::size_t lookup,
                                       NamespaceId ns) const;

  static std::uint64_t next_instance_id() {
    static std::atomic<std::uint64_t> counter{0};
    return counter.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  BlockAllocator* allocator_;
  std::int32_t block_size_;
  std::uint64_t instance_id_ = next_instance_id();
  std::uint64_t num_ended_ = 0;
  RadixTree* tree_ = nullptr;
  SequenceId next_id_ = 0;
  std::unordered_map<SequenceId, detail::SequenceState> sequences_;
};

}  // namespace radix_attention

#include "radix_attention/cache/detail/radix_tree_sequences.hpp"
#include "radix_attention/cache/detail/sequence_manager.inl"
