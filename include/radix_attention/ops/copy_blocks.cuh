#pragma once
/// @file
/// Host launcher of copy_blocks: runs a block copy list (SequenceManager::fork's
/// ForkResult::copies, or plain (src, dst) pairs) on the K and V caches, honouring the cache
/// strides. Included by ops/kv_append.cuh.
///
/// @code
///   radix_attention::ForkResult fork = manager.fork(parent);
///   // copy fork.copies (std::vector<BlockCopy>, 12 bytes each) to a device buffer as is:
///   cudaMemcpyAsync(d_copies, fork.copies.data(), fork.copies.size() * sizeof(BlockCopy),
///                   cudaMemcpyHostToDevice, stream);
///   radix_attention::copy_blocks(cache, d_copies, int(fork.copies.size()), stream);
/// @endcode

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/fp8.cuh"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/kv_append.cuh"
#include "radix_attention/ops/detail/kv_write_checks.hpp"
#include "radix_attention/ops/detail/kv_write_launch.hpp"
#include "radix_attention/ops/kv_write_validation.hpp"

namespace radix_attention {

// The device kernel reads a BlockCopy array as int32 triples (src, dst, num_tokens).
static_assert(std::is_standard_layout_v<BlockCopy> &&
                  sizeof(BlockCopy) == 3 * sizeof(std::int32_t) && offsetof(BlockCopy, src) == 0 &&
                  offsetof(BlockCopy, dst) == 4 && offsetof(BlockCopy, num_tokens) == 8,
              "copy_blocks reads BlockCopy as three int32");
static_assert(detail::kKvWriteLaunchThreads == detail::kKvWriteThreads);

namespace detail {

/// THE dispatch point of copy_blocks: T x {16-byte packets, single elements} x {4, 1} tokens
/// per thread. Instantiated for the T a caller uses: float, __half, __nv_bfloat16,
/// __nv_fp8_e4m3.
template <class T>
auto select_copy_blocks_kernel(bool packets, int tokens_per_thread) {  // 4 or 1
  constexpr int kVec = 16 / sizeof(T);
  using Kernel = void (*)(CopyBlocksParams<T>);
  if (packets) {
    return tokens_per_thread == 4 ? Kernel{&copy_blocks_kernel<T, kVec, 4>}
                                  : Kernel{&copy_blocks_kernel<T, kVec, 1>};
  }
  return tokens_per_thread == 4 ? Kernel{&copy_blocks_kernel<T, 1, 4>}
                                : Kernel{&copy_blocks_kernel<T, 1, 1>};
}

template <class T>
void launch_copy_blocks(const PagedKvCacheMutView<T>& cache, const std::int32_t* copies,
                        int copy_stride, int num_copies, const char* name, const char* count_name,
                        cudaStream_t stream) {
  static_assert(is_kv_cache_dtype_v<T>,
                "copy_blocks: T must be float, __half, __nv_bfloat16 or __nv_fp8_e4m3");
  check_writable_cache(cache);
  expects(num_copies >= 0, count_name, num_copies, "must be >= 0");
  if (num_copies == 0) return;
  expects(copies != nullptr, name, "nullptr", "must be a device pointer");
  expects(is_aligned_to(copies, alignof(std::int32_t)), name, static_cast<const void*>(copies),
          "must be int32-aligned");

  const bool packets = cache_allows_packets(cache);
  const int vec = packets ? 16 / static_cast<int>(sizeof(T)) : 1;
  CopyBlocksParams<T> p{};
  p.k = cache.k;
  p.v = cache.v;
  p.cache_strides = resolved_strides(cache);
  p.copies = copies;
  p.copy_stride = copy_stride;
  p.num_blocks = cache.num_blocks;
  p.block_size = cache.block_size;
  p.num_kv_heads = cache.num_kv_heads;
  p.chunks_per_head = cache.head_dim / vec;
  const int row_items = 2 * p.num_kv_heads * p.chunks_per_head;
  const int tokens =
      kv_write_is_large(static_cast<std::int64_t>(num_copies) * cache.block_size, row_items) ? 4
                                                                                             : 1;
  const KvWriteBlock block = kv_write_block(row_items);
  const int group = block.y * tokens;
  // grid.y <= 65535; the kernel strides over the rest of a long block.
  const dim3 grid(static_cast<unsigned>(num_copies),
                  static_cast<unsigned>(std::min(65535, (cache.block_size + group - 1) / group)));
  const auto kernel = select_copy_blocks_kernel<T>(packets, tokens);
  discard_stale_error();  // the launch rule of core/cuda_check.cuh
  kernel<<<grid, dim3(block.x, block.y), 0, stream>>>(p);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

/**
 * @brief Copies whole blocks of the K and V caches: for each pair i, every (offset, head,
 * element) of block pairs[2i] into block pairs[2i + 1]. The pairs run concurrently.
 * @param cache writable K/V cache (any strides PagedKvCacheView documents); T float, __half,
 *        __nv_bfloat16 or __nv_fp8_e4m3.
 * @param pairs device int32 [num_pairs, 2] (src, dst). Ids must be in [0, num_blocks), no dst
 *        twice, no dst that another pair reads: device data, not read here (check the host copy
 *        with validate_block_copies; RADIX_ATTENTION_KERNEL_BOUNDS_CHECK traps on bad ids).
 * @param num_pairs >= 0 (0 launches nothing).
 * @param stream stream to launch on.
 * @throw InvalidArgument on an invalid cache view, a negative count or a null / misaligned
 *        pairs pointer; CudaError if the launch fails. Nothing is launched on a throw.
 */
template <class T>
void copy_blocks(const PagedKvCacheMutView<T>& cache, const std::int32_t* pairs, int num_pairs,
                 cudaStream_t stream) {
  detail::launch_copy_blocks(cache, pairs, 2, num_pairs, "pairs", "num_pairs", stream);
}

/**
 * @brief Runs a BlockCopy list (ForkResult::copies uploaded as is): for each copy, the first
 * num_tokens offsets (all heads and elements) of block src into block dst, in K and V.
 * @param copies device array of num_copies BlockCopy; the rules of the pairs overload, and
 *        num_tokens in [0, block_size] (validate_block_copies checks a host copy).
 * @throw as the pairs overload.
 */
template <class T>
void copy_blocks(const PagedKvCacheMutView<T>& cache, const BlockCopy* copies, int num_copies,
                 cudaStream_t stream) {
  detail::launch_copy_blocks(cache, reinterpret_cast<const std::int32_t*>(copies), 3, num_copies,
                             "copies", "num_copies", stream);
}

}  // namespace radix_attention
