#pragma once
/// @file
/// Host side of kernels/detail/kv_slot_code.cuh: the slot code of a cache view, with the check
/// that its slots fit in int32. Shared by the decode launchers (paged_decode, radix_decode).

#include <cstdint>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/detail/kv_slot_code.cuh"

namespace radix_attention::detail {

/**
 * The slot code the decode kernels address `cache` with (strides already checked by
 * check_kv_strides and extents by check_heads_and_cache).
 * @throw InvalidArgument for a layout whose blocks are not block_size token strides apart
 *        and whose rows lie 2^31 or more 16-byte units from cache.k / cache.v.
 */
template <class T>
KvSlotCode kv_slot_code(const PagedKvCacheView<T>& cache) {
  const KvStrides s = resolved_strides(cache);
  // A block of one token has offset 0 only: its token stride is never used.
  const std::int64_t token = cache.block_size == 1 ? s.block : s.token;
  if (s.block == token * cache.block_size) {
    // NHD-like: the slot is block * block_size + offset, an int32 for every valid cache.
    return KvSlotCode{cache.block_size, 1, token, s.head, cache.num_blocks};
  }
  constexpr std::int64_t kUnit = 16 / static_cast<std::int64_t>(sizeof(T));
  // Terms of an extent 1 never grow (index 0), so their multiplier may be anything: 0.
  const std::int64_t block_mul = cache.num_blocks > 1 ? s.block / kUnit : 0;
  const std::int64_t token_mul = cache.block_size > 1 ? s.token / kUnit : 0;
  // Multipliers below 2^31 first, so that the products cannot overflow.
  const bool fits =
      block_mul <= INT32_MAX && token_mul <= INT32_MAX &&
      (cache.num_blocks - 1) * block_mul + (cache.block_size - 1) * token_mul <= INT32_MAX;
  expects_that(fits, "cache strides (block ", s.block, ", token ", s.token,
               ") with num_blocks = ", cache.num_blocks, ", block_size = ", cache.block_size,
               ": a layout other than NHD must keep every row within 2^31 16-byte units of "
               "cache.k / cache.v (the decode kernels address it with int32 slots)");
  return KvSlotCode{static_cast<int>(block_mul), static_cast<int>(token_mul), kUnit, s.head,
                    cache.num_blocks};
}

}  // namespace radix_attention::detail
