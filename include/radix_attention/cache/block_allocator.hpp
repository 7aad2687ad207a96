#pragma once
/// @file
/// BlockAllocator: the fixed pool of KV-cache blocks, with per-block reference counts so that
/// several sequences and the radix tree can hold one block. Plain C++17.

#include <cstdint>
#include <vector>

#include "radix_attention/core/error.hpp"

namespace radix_attention {

/// Index of a block in the KV cache arrays (`[num_blocks, block_size, heads, head_dim]`).
using BlockId = std::int32_t;

/**
 * @brief Fixed pool of `num_blocks` KV blocks with O(1) allocate / retain / release.
 *
 * A block is free (reference count 0, on the free list) or held (count >= 1). `allocate`
 * hands out blocks with count 1; `retain` adds a holder; `release` drops one and returns the
 * block to the free list when the count reaches zero. Every operation either succeeds
 * completely or throws and changes nothing, so `num_free() + num_used() == num_blocks()`
 * always holds and no block is ever handed out twice.
 */
class BlockAllocator {
 public:
  /// @param num_blocks pool size, >= 1.
  /// @throw InvalidArgument if num_blocks < 1.
  explicit BlockAllocator(std::int32_t num_blocks) {
    expects(num_blocks >= 1, "num_blocks", num_blocks, "must be >= 1");
    ref_counts_.assign(static_cast<std::size_t>(num_blocks), 0);
    free_list_.reserve(static_cast<std::size_t>(num_blocks));
    // Pushed in reverse so that a fresh pool hands out 0, 1, 2, ... (readable in tests/logs).
    for (std::int32_t b = num_blocks - 1; b >= 0; --b) free_list_.push_back(b);
  }

  std::int32_t num_blocks() const { return static_cast<std::int32_t>(ref_counts_.size()); }
  std::int32_t num_free() const { return static_cast<std::int32_t>(free_list_.size()); }
  std::int32_t num_used() const { return num_blocks() - num_free(); }

  /// @brief True if `block` is a valid id of this pool (free or held).
  bool contains(BlockId block) const { return block >= 0 && block < num_blocks(); }

  /// @brief Number of holders of `block` (0 = free).
  /// @throw InvalidArgument if `block` is not an id of this pool.
  std::int32_t ref_count(BlockId block) const {
    check_id(block);
    return ref_counts_[static_cast<std::size_t>(block)];
  }

  /// @brief Allocates `n` blocks (all or nothing), each with reference count 1, appended to `out`.
  /// @throw InvalidArgument if n < 0; CapacityError if fewer than n blocks are free.
  void allocate_into(std::int32_t n, std::vector<BlockId>& out) {
    expects(n >= 0, "n", n, "must be >= 0");
    // The message is built only on failure: these checks sit on every allocation's hot path.
    if (n > num_free()) {
      expects<CapacityError>(
          false, "n", n,
          detail::concat("exceeds the ", num_free(), " free blocks of a pool of ", num_blocks())
              .c_str());
    }
    out.reserve(out.size() + static_cast<std::size_t>(n));
    for (std::int32_t i = 0; i < n; ++i) {
      const BlockId block = free_list_.back();
      free_list_.pop_back();
      ref_counts_[static_cast<std::size_t>(block)] = 1;
      out.push_back(block);
    }
  }

  /// @brief Allocates `n` blocks (all or nothing), each with reference count 1.
  /// @throw InvalidArgument if n < 0; CapacityError if fewer than n blocks are free.
  std::vector<BlockId> allocate(std::int32_t n) {
    std::vector<BlockId> out;
    allocate_into(n, out);
    return out;
  }

  /// @brief Adds a holder to a held block.
  /// @throw InvalidArgument if `block` is unknown or free (retaining a free block would let it be
  /// handed out twice).
  void retain(BlockId block) {
    check_held(block, "block");
    ++ref_counts_[static_cast<std::size_t>(block)];
  }

  /// @brief Drops a holder; the block returns to the free list when its count reaches zero.
  /// @throw InvalidArgument if `block` is unknown or already free (double release).
  void release(BlockId block) {
    check_held(block, "block");
    if (--ref_counts_[static_cast<std::size_t>(block)] == 0) free_list_.push_back(block);
  }

  /// @brief retain() for every id in `blocks` (repeats count once each); all or nothing.
  void retain(const std::vector<BlockId>& blocks) {
    for (BlockId block : blocks) check_held(block, "blocks[i]");
    for (BlockId block : blocks) ++ref_counts_[static_cast<std::size_t>(block)];
  }

  /// @brief release() for every id in `blocks` (repeats count once each); all or nothing: if any
  /// release would be invalid (unknown id, or more releases than holders), nothing changes.
  void release(const std::vector<BlockId>& blocks) {
    std::size_t done = 0;
    try {
      for (; done < blocks.size(); ++done) {
        check_held(blocks[done], "blocks[i]");
        --ref_counts_[static_cast<std::size_t>(blocks[done])];
      }
    } catch (...) {
      for (std::size_t i = 0; i < done; ++i) ++ref_counts_[static_cast<std::size_t>(blocks[i])];
      throw;
    }
    // Only after every release is known valid do the blocks that reached zero go back to the
    // free list, each once even if it was listed several times: -1 marks "already pushed".
    for (BlockId block : blocks) {
      std::int32_t& count = ref_counts_[static_cast<std::size_t>(block)];
      if (count == 0) {
        free_list_.push_back(block);
        count = -1;
      }
    }
    for (BlockId block : blocks) {
      std::int32_t& count = ref_counts_[static_cast<std::size_t>(block)];
      if (count == -1) count = 0;
    }
  }

 private:
  void check_id(BlockId block, const char* name = "block") const {
    if (!contains(block)) {
      expects(false, name, block,
              detail::concat("is not a block id of a pool of ", num_blocks()).c_str());
    }
  }

  void check_held(BlockId block, const char* name) const {
    check_id(block, name);
    if (ref_counts_[static_cast<std::size_t>(block)] <= 0) {  // branch first: hot path
      expects(false, name, block, "is free (released more times than it was allocated/retained)");
    }
  }

  std::vector<std::int32_t> ref_counts_;
  std::vector<BlockId> free_list_;
};

}  // namespace radix_attention
