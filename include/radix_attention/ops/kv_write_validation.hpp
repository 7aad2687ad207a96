#pragma once
/// @file
/// Host-side validation of the device data the cache writers trust: a slot mapping (kv_append)
/// and a block copy list (copy_blocks). The launchers cannot read device memory without a
/// synchronisation, so they do not check these; an engine validates its host copies here
/// before uploading them (or builds with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK to trap on the
/// device). Plain C++17.

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <unordered_set>

#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention {

/**
 * @brief Checks a slot mapping before it is uploaded for kv_append: every entry is negative
 * (padding) or a slot in [0, num_slots), and no slot is named twice (two tokens would race for
 * it and the cache would hold either).
 * @param slot_mapping host array of num_tokens entries (may be nullptr when num_tokens == 0).
 * @param num_tokens entries, >= 0.
 * @param num_slots cache.num_blocks * cache.block_size.
 * @throw InvalidArgument naming the first bad entry "slot_mapping[i] = value" and why.
 */
inline void validate_slot_mapping(const std::int32_t* slot_mapping, std::int64_t num_tokens,
                                  std::int64_t num_slots) {
  expects(num_tokens >= 0, "num_tokens", num_tokens, "must be >= 0");
  expects(num_slots >= 0, "num_slots", num_slots, "must be >= 0");
  if (num_tokens == 0) return;
  expects(slot_mapping != nullptr, "slot_mapping", "nullptr", "must be a host array");
  std::unordered_map<std::int32_t, std::int64_t> first_use;
  first_use.reserve(static_cast<std::size_t>(num_tokens));
  for (std::int64_t i = 0; i < num_tokens; ++i) {
    const std::int32_t slot = slot_mapping[i];
    if (slot < 0) continue;
    expects_that(slot < num_slots, "slot_mapping[", i, "] = ", slot,
                 ": must be < num_slots = ", num_slots, " (or negative for padding)");
    const auto [it, fresh] = first_use.emplace(slot, i);
    expects_that(fresh, "slot_mapping[", i, "] = ", slot, ": slot already used by slot_mapping[",
                 it->second, "]");
  }
}

namespace detail {

/// The checks of both validate_block_copies overloads over entry accessors.
template <class Entry>
void validate_copy_list(std::int64_t n, const char* name, Entry entry, int num_blocks,
                        int block_size) {
  std::unordered_set<std::int32_t> sources;
  std::unordered_map<std::int32_t, std::int64_t> dests;
  for (std::int64_t i = 0; i < n; ++i) {
    const BlockCopy c = entry(i);
    expects_that(c.src >= 0 && c.src < num_blocks, name, "[", i, "].src = ", c.src,
                 ": must be in [0, num_blocks = ", num_blocks, ")");
    expects_that(c.dst >= 0 && c.dst < num_blocks, name, "[", i, "].dst = ", c.dst,
                 ": must be in [0, num_blocks = ", num_blocks, ")");
    expects_that(c.num_tokens >= 0 && c.num_tokens <= block_size, name, "[", i,
                 "].num_tokens = ", c.num_tokens, ": must be in [0, block_size = ", block_size,
                 "]");
    const auto [it, fresh] = dests.emplace(c.dst, i);
    expects_that(fresh, name, "[", i, "].dst = ", c.dst, ": also the destination of ", name, "[",
                 it->second, "]");
    sources.insert(c.src);
  }
  // Copies run concurrently: a block written by one copy and read by another would race.
  for (std::int64_t i = 0; i < n; ++i) {
    const BlockCopy c = entry(i);
    expects_that(c.src == c.dst || sources.count(c.dst) == 0, name, "[", i, "].dst = ", c.dst,
                 ": is also the source of another copy");
  }
}

}  // namespace detail

/**
 * @brief Checks a (src, dst) pair list before it is uploaded for copy_blocks: ids in
 * [0, num_blocks), no destination twice, no destination that another pair reads.
 * @param pairs host array [num_pairs, 2] (may be nullptr when num_pairs == 0).
 * @throw InvalidArgument naming the first bad entry "pairs[i].src/dst = value" and why.
 */
inline void validate_block_copies(const std::int32_t* pairs, std::int64_t num_pairs,
                                  int num_blocks) {
  expects(num_pairs >= 0, "num_pairs", num_pairs, "must be >= 0");
  if (num_pairs == 0) return;
  expects(pairs != nullptr, "pairs", "nullptr", "must be a host array");
  detail::validate_copy_list(
      num_pairs, "pairs",
      [&](std::int64_t i) {
        return BlockCopy{pairs[2 * i], pairs[2 * i + 1], 0};
      },
      num_blocks,
      /*block_size=*/0);
}

/**
 * @brief Checks a BlockCopy list (ForkResult::copies) before it is uploaded for copy_blocks:
 * the pair rules of the other overload, and num_tokens in [0, block_size].
 * @throw InvalidArgument naming the first bad entry "copies[i].field = value" and why.
 */
inline void validate_block_copies(const BlockCopy* copies, std::int64_t num_copies, int num_blocks,
                                  int block_size) {
  expects(num_copies >= 0, "num_copies", num_copies, "must be >= 0");
  if (num_copies == 0) return;
  expects(copies != nullptr, "copies", "nullptr", "must be a host array");
  detail::validate_copy_list(
      num_copies, "copies", [&](std::int64_t i) { return copies[i]; }, num_blocks, block_size);
}

}  // namespace radix_attention
