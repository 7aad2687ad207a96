#pragma once
/// @file
/// Launch shape of the cache writers (kv_append, copy_blocks), shared so both size their CTAs
/// and choose their tokens per thread the same way. Plain C++17.

#include <algorithm>
#include <cstdint>

namespace radix_attention::detail {

/// Threads per CTA (kernels/kv_append.cuh's kKvWriteThreads; checked there at compile time).
inline constexpr int kKvWriteLaunchThreads = 256;

/// From this many packets on, a write is "large" and a writer moves several tokens per thread
/// (4 for 16-byte packets): 2^20 packets at 4 per thread are 256 K threads, about one full wave
/// of a 132-SM H100/H200 (2048 threads per SM), so the 4x fewer CTAs still fill the GPU while
/// each thread keeps 64 bytes in flight. Below it (a decode step: 256 tokens x 8 heads x 128
/// bf16 = 64 K packets) one token per thread spreads the few packets over as many SMs as
/// possible: latency, not bandwidth, is what counts there.
inline constexpr std::int64_t kManyPackets = std::int64_t(1) << 20;

/// CTA shape for rows of `row_items` packets: x covers the row (rounded up to whole warps, at
/// most the CTA), y stacks tokens so short rows still fill 256 threads.
struct KvWriteBlock {
  int x, y;
};

inline KvWriteBlock kv_write_block(int row_items) {
  const int x = std::min(kKvWriteLaunchThreads, (row_items + 31) / 32 * 32);
  return {x, kKvWriteLaunchThreads / x};
}

/// True for a large write (see kManyPackets) of `tokens` rows of `row_items` packets.
inline bool kv_write_is_large(std::int64_t tokens, int row_items) {
  return tokens * row_items >= kManyPackets;
}

}  // namespace radix_attention::detail
