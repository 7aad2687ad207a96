#pragma once
/// @file
/// Per-sequence bookkeeping of SequenceManager. Internal: users include sequence_manager.hpp.

#include <cstdint>
#include <limits>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/detail/radix_tree_sequence_state.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention {
namespace detail {

/**
 * @brief What SequenceManager knows about one live sequence.
 *
 * Kept as one struct (rather than parallel maps) so that prefix-cache-aware state — the token
 * ids, the key namespace and the locked tree node of the cached prefix — can be added as fields
 * without touching the operations that only need the block list.
 *
 * Invariants: `blocks.size() == ceil(num_tokens / block_size)`; the sequence holds one
 * allocator reference on every block in `blocks`; `0 <= pending_begin <= num_tokens`.
 */
struct SequenceState {
  std::int32_t num_tokens = 0;  ///< context length
  std::vector<BlockId> blocks;  ///< block table row, in token order
  std::int32_t pending_begin =
      0;                   ///< tokens [pending_begin, num_tokens) are not yet in a slot mapping
  TreeSequenceState tree;  ///< prefix-cache state (used only by a manager with a RadixTree)
};

/// @brief ceil(num_tokens / block_size) for non-negative num_tokens and positive block_size.
inline std::int64_t blocks_for(std::int64_t num_tokens, std::int32_t block_size) {
  return (num_tokens + block_size - 1) / block_size;
}

/// @brief Number of tokens in the last block of a sequence of `num_tokens` tokens if that block is
/// partially filled, 0 if the sequence ends exactly at a block boundary (or is empty).
inline std::int32_t partial_tokens(std::int32_t num_tokens, std::int32_t block_size) {
  return num_tokens % block_size;
}

/// @brief Blocks to allocate when a sequence of `num_tokens` tokens grows by `extra` tokens.
inline std::int32_t blocks_to_grow(std::int32_t num_tokens, std::int32_t extra,
                                   std::int32_t block_size) {
  return static_cast<std::int32_t>(blocks_for(std::int64_t{num_tokens} + extra, block_size) -
                                   blocks_for(num_tokens, block_size));
}

/// @brief Checks that a context of `current + extra` tokens still has int32 token indices, the
/// type of `context_lens` on the device.
inline void check_context_fits(std::int32_t current, std::int32_t extra, const char* name) {
  if (std::int64_t{current} + extra > std::numeric_limits<std::int32_t>::max()) {
    // Message built only on failure: append() is called once per token of every sequence.
    expects(false, name, extra,
            detail::concat("would make the context longer than int32 allows (current length ",
                           current, ")")
                .c_str());
  }
}

}  // namespace detail
}  // namespace radix_attention
