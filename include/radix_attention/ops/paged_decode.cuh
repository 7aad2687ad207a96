#pragma once
/// @file
/// Host launcher of paged decode attention: validates every argument, plans split-KV,
/// dispatches (dtype, head_dim) to a kernel instance at one place, and launches on a stream.
///
/// Typical use (all pointers device memory; the workspace is sized once for the largest batch):
/// @code
///   radix_attention::PagedKvCacheView<__nv_bfloat16> cache{k, v, num_blocks, block_size,
///                                                          num_kv_heads, head_dim};
///   radix_attention::BlockTableView tables{block_tables, context_lens, num_seqs,
///                                          max_blocks_per_seq, row_stride};
///   std::size_t bytes = radix_attention::paged_decode_workspace_bytes(num_q_heads, cache, tables);
///   // ... allocate `bytes` once ...
///   radix_attention::paged_decode(q, num_q_heads, cache, tables, out, lse, workspace, bytes,
///                                 stream);
/// @endcode
/// An fp8 e4m3 cache (written by kv_append) takes the same call with a
/// `PagedKvCacheView<__nv_fp8_e4m3>` and its scales in the options (q and out stay bf16 / half):
/// @code
///   radix_attention::PagedDecodeOptions options;
///   options.kv_scales = {d_k_scale, d_v_scale, radix_attention::KvScaleMode::kPerHead};
///   radix_attention::paged_decode(q, num_q_heads, fp8_cache, tables, out, lse, workspace, bytes,
///                                 stream, options);
/// @endcode

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/device_query.cuh"
#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/fp8.cuh"
#include "radix_attention/core/kv_scales.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/paged_decode.cuh"
#include "radix_attention/ops/detail/decode_checks.hpp"
#include "radix_attention/ops/detail/kv_scale_checks.hpp"
#include "radix_attention/ops/detail/kv_slot_code.cuh"
#include "radix_attention/ops/merge_states.cuh"

namespace radix_attention {

/// @brief Tuning knobs of paged_decode; the defaults are what a serving engine wants.
struct PagedDecodeOptions {
  float scale = 0.f;   ///< softmax scale; 0 means 1 / sqrt(head_dim)
  int num_splits = 0;  ///< split-KV factor; 0 chooses from batch x kv heads vs the SM count
  int num_sms = 0;     ///< SM count for the automatic choice; 0 queries the current device
  /// Elements between rows (sequences) of q; 0 = num_q_heads * head_dim (dense). Larger for a
  /// slice of a fused QKV projection or a tensor-parallel rank's heads (as in
  /// PrefillBatchView); a multiple of 16 bytes.
  std::int64_t q_row_stride = 0;
  std::int64_t out_row_stride = 0;  ///< elements between rows of out; 0 = dense, as q's
  /// Dequantisation scales of an fp8 e4m3 cache (core/kv_scales.hpp; null pointers mean 1);
  /// must stay null for a 16-bit or float cache.
  KvScales kv_scales{};
  /// Batch-invariant mode: the split count no longer follows the batch (num_splits if set, else
  /// kBatchInvariantDecodeSplits), so a sequence's KV ranges, and with them its output bits,
  /// depend only on its own context length, not on the other sequences of the launch.
  bool deterministic = false;
};

/// Splits per sequence in batch-invariant paged decode when num_splits is 0. Measured on an
/// NVIDIA H200 (bf16, 32 q / 8 kv heads, block 16; automatic choice in parentheses): 16 x 16384
/// 260 us (260), 64 x 4096 266 (259), 128 x 1024 158 (143).
inline constexpr int kBatchInvariantDecodeSplits = 2;

namespace detail {

inline constexpr int kMaxDecodeSplits = 128;
// A split shorter than this spends more on its pipeline fill and merge row than it saves.
inline constexpr int kMinSplitTokens = 256;

/// A kernel instance and its launch shape (T: query / output type, TKv: cache element type).
template <class T, class TKv = T>
struct PagedDecodeKernelInfo {
  void (*kernel)(PagedDecodeParams<T, TKv>);
  int threads;
  int smem_bytes;
};

/// CTAs along one GQA group: each takes kPagedDecodeRowsPerCta of its query heads.
inline int paged_decode_head_chunks(int group_size) {
  return (group_size + kPagedDecodeRowsPerCta - 1) / kPagedDecodeRowsPerCta;
}

/// THE dispatch point: (T, TKv, head_dim) -> kernel instance. Instantiated combinations:
/// {__half, __nv_bfloat16} x {64, 128, 256} on tensor cores, {float} x {64, 128, 256} on CUDA
/// cores, and for an fp8 e4m3 cache (TKv) {__half, __nv_bfloat16} queries x {64, 128, 256} on
/// tensor cores, instantiated only where a caller passes an fp8 cache. The GQA group size is a
/// runtime value in all (rows of the CTA), not a template.
template <class T, class TKv = T>
PagedDecodeKernelInfo<T, TKv> select_paged_decode_kernel(int head_dim) {
  auto make = [](auto d) -> PagedDecodeKernelInfo<T, TKv> {
    constexpr int D = decltype(d)::value;
    if constexpr (DTypeTraits<T>::is_16bit) {
      using Tr = PagedDecodeMmaTraits<T, D, TKv>;
      return {&paged_decode_mma_kernel<T, D, TKv>, Tr::kThreads, static_cast<int>(Tr::kSmemBytes)};
    } else {
      return {&paged_decode_simt_kernel<T, D>, RadixSimtTraits::kThreads, 0};
    }
  };
  return dispatch_head_dim(head_dim, make);
}

/// Raises the instance's dynamic shared-memory limit (once per device) and returns how many of
/// its CTAs fit on one SM. Setting the attribute twice from racing threads is harmless.
template <class T, class TKv>
int configure_and_occupancy(const PagedDecodeKernelInfo<T, TKv>& info, int device) {
  RADIX_ATTENTION_CUDA_CHECK(cudaFuncSetAttribute(
      info.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, info.smem_bytes));
  int ctas = 0;
  RADIX_ATTENTION_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &ctas, info.kernel, info.threads, static_cast<std::size_t>(info.smem_bytes)));
  expects_that<CudaError>(ctas >= 1, "paged_decode: kernel for head_dim does not fit on device ",
                          device, " (", info.smem_bytes, " bytes of shared memory)");
  return ctas;
}

template <class T, class TKv>
int cached_occupancy(const PagedDecodeKernelInfo<T, TKv>& info, int head_dim, int device) {
  // One slot per (head_dim, device); T, TKv are part of the template, so of the cache's identity.
  static std::array<std::atomic<int>, 3 * kMaxCachedDevices> cache{};
  const int index = (head_dim / 64 == 4 ? 2 : head_dim / 64 - 1) * kMaxCachedDevices + device;
  if (device < kMaxCachedDevices && cache[index].load(std::memory_order_relaxed) > 0) {
    return cache[index].load(std::memory_order_relaxed);
  }
  const int ctas = configure_and_occupancy(info, device);
  if (device < kMaxCachedDevices) cache[index].store(ctas, std::memory_order_relaxed);
  return ctas;
}

/// Checks everything except device pointers; shared by the workspace query and the launcher.
template <class T>
void validate_paged_decode_shapes(int num_q_heads, const PagedKvCacheView<T>& cache,
                                  const BlockTableView& tables, const PagedDecodeOptions& options) {
  // Sequences are grid.z of the launch, hence at most 65535 of them.
  check_decode_shapes(num_q_heads, cache, tables, NumSeqsLimit{65535, "must be in [0, 65535]"});
  const std::int64_t capacity =
      static_cast<std::int64_t>(tables.max_blocks_per_seq) * cache.block_size;
  expects(capacity <= INT32_MAX, "tables.max_blocks_per_seq * cache.block_size", capacity,
          "must fit in int32");
  expects(tables.max_context_len >= -1 && tables.max_context_len <= capacity,
          "tables.max_context_len", tables.max_context_len,
          "must be -1 (unknown) or in [0, max_blocks_per_seq * block_size]");
  expects(std::isfinite(options.scale), "options.scale", options.scale, "must be finite");
  expects(options.num_splits >= 0 && options.num_splits <= kMaxDecodeSplits, "options.num_splits",
          options.num_splits, "must be in [0, 128] (0 = automatic)");
  expects(options.num_sms >= 0, "options.num_sms", options.num_sms, "must be >= 0");
  (void)kv_slot_code(cache);  // throws for a layout the kernels cannot address
  check_read_scales<T>(options.kv_scales, "options.kv_scales");
}

/// Split-KV plan. Splits only when there are fewer work items than SMs, then into as few
/// splits as leave no SM without an item: ceil(SMs / items), each at least kMinSplitTokens
/// long. Once every SM has an item, each split only adds partial-state traffic and a merge
/// (bench/RESULTS.md, paged_decode, "Split-KV count on the H200": 16 x 16384 takes 23 % less
/// time in 2 splits than unsplit, 64 x 4096 and 128 x 1024 are slower with every split).
template <class T>
int plan_num_splits(int num_q_heads, const PagedKvCacheView<T>& cache, const BlockTableView& tables,
                    const PagedDecodeOptions& options) {
  if (options.num_splits > 0) return options.num_splits;
  if (options.deterministic) return kBatchInvariantDecodeSplits;
  if (tables.num_seqs == 0) return 1;
  const long long sms = options.num_sms > 0 ? options.num_sms : device_sm_count(current_device());
  const long long items = static_cast<long long>(tables.num_seqs) * cache.num_kv_heads *
                          paged_decode_head_chunks(num_q_heads / cache.num_kv_heads);
  if (items >= sms) return 1;
  const long long max_ctx =
      tables.max_context_len >= 0
          ? tables.max_context_len
          : static_cast<long long>(tables.max_blocks_per_seq) * cache.block_size;
  const long long by_length = std::max(1LL, max_ctx / kMinSplitTokens);
  return static_cast<int>(
      std::min({(sms + items - 1) / items, by_length, static_cast<long long>(kMaxDecodeSplits)}));
}

inline std::size_t align_up(std::size_t bytes, std::size_t alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

/// Workspace layout for `splits` > 1: partial outputs, then (256-byte aligned) partial LSEs.
inline std::size_t partial_out_bytes(int num_seqs, int splits, int num_q_heads, int head_dim) {
  return align_up(static_cast<std::size_t>(num_seqs) * splits * num_q_heads * head_dim * 4, 256);
}
inline std::size_t decode_workspace_bytes(int num_seqs, int splits, int num_q_heads, int head_dim) {
  if (splits <= 1 || num_seqs == 0) return 0;
  return partial_out_bytes(num_seqs, splits, num_q_heads, head_dim) +
         align_up(static_cast<std::size_t>(num_seqs) * splits * num_q_heads * 4, 256);
}

}  // namespace detail

/**
 * @brief Split-KV factor paged_decode will use for these shapes (1 = no split).
 * @throw InvalidArgument on invalid shapes (see paged_decode); CudaError if the device query fails.
 */
template <class T>
int paged_decode_num_splits(int num_q_heads, const PagedKvCacheView<T>& cache,
                            const BlockTableView& tables, const PagedDecodeOptions& options = {}) {
  detail::validate_paged_decode_shapes(num_q_heads, cache, tables, options);
  return detail::plan_num_splits(num_q_heads, cache, tables, options);
}

/**
 * @brief Bytes of device workspace paged_decode needs for these shapes (0 when it does not
 * split). Depends on the shapes, the options and the current device's SM count only, so a
 * caller can size one buffer for its largest batch once.
 * @throw InvalidArgument on invalid shapes; CudaError if the device query fails.
 */
template <class T>
std::size_t paged_decode_workspace_bytes(int num_q_heads, const PagedKvCacheView<T>& cache,
                                         const BlockTableView& tables,
                                         const PagedDecodeOptions& options = {}) {
  const int splits = paged_decode_num_splits(num_q_heads, cache, tables, options);
  return detail::decode_workspace_bytes(tables.num_seqs, splits, num_q_heads, cache.head_dim);
}

/**
 * @brief Decode attention: one query token per sequence over its paged KV cache.
 *
 * out[s][h] = softmax(scale * q[s][h] . K[s, kvh]^T) V[s, kvh] over tokens [0, context_lens[s])
 * of sequence s, with kvh = h / (num_q_heads / num_kv_heads) (GQA / MQA). Accumulation is in
 * float. A sequence with context length 0 gets out = 0 and lse = -inf.
 *
 * An fp8 e4m3 cache (TKv = __nv_fp8_e4m3, T = __half or __nv_bfloat16) is read with the
 * scales of options.kv_scales: the result is attention over the dequantised cache
 * (stored * scale, core/kv_scales.hpp), computed from exact 16-bit copies of the stored values
 * with the K scale folded into the softmax scale and the V scale into the output. Scales are
 * device data: they must be positive and finite (bounds-check builds trap otherwise).
 *
 * @param q [num_seqs, num_q_heads, head_dim] of T, device, 16-byte aligned; rows
 *        options.q_row_stride elements apart (0 = dense), heads dense within a row.
 * @param num_q_heads query heads, a multiple of cache.num_kv_heads.
 * @param cache K/V caches of TKv (T, or __nv_fp8_e4m3 for 16-bit T); head_dim in {64, 128,
 *        256}; k, v 16-byte aligned; any layout through the view's strides (NHD, HND,
 *        combined; multiples of 16 bytes).
 * @param tables block tables + context lengths (device); every block id a sequence uses must
 *        be in [0, num_blocks) and every context length in [0, max_blocks_per_seq *
 *        block_size]. These are device data, not read here: check them with
 *        validate_block_tables, or build with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK to trap.
 * @param out [num_seqs, num_q_heads, head_dim] of T, device, 16-byte aligned; rows
 *        options.out_row_stride elements apart (0 = dense). Nothing between rows is written.
 * @param lse [num_seqs, num_q_heads] float natural-log log-sum-exp of the scaled scores (dense),
 * or nullptr.
 * @param workspace device buffer of >= paged_decode_workspace_bytes(...) bytes, 16-byte aligned
 *        (may be nullptr when that is 0). Never allocated here.
 * @param workspace_bytes its size.
 * @param stream stream to launch on (the split-KV merge follows on the same stream).
 * @param options scale, split override, SM count override, q / out row strides, fp8 scales.
 * @throw InvalidArgument on a null or misaligned pointer or invalid shapes (scales given for a
 *        cache that is not fp8, a bad scale mode or a misaligned scale); CapacityError if the
 *        workspace is too small; CudaError if a CUDA call fails. Nothing is launched on a throw.
 */
template <class T, class TKv>
void paged_decode(const T* q, int num_q_heads, const PagedKvCacheView<TKv>& cache,
                  const BlockTableView& tables, T* out, float* lse, void* workspace,
                  std::size_t workspace_bytes, cudaStream_t stream,
                  const PagedDecodeOptions& options = {}) {
  static_assert(is_supported_dtype_v<T>, "paged_decode: T must be float, __half or __nv_bfloat16");
  static_assert(
      std::is_same_v<TKv, T> || (std::is_same_v<TKv, __nv_fp8_e4m3> && DTypeTraits<T>::is_16bit),
      "paged_decode: the cache holds T, or fp8 e4m3 with __half / __nv_bfloat16 q");
  detail::validate_paged_decode_shapes(num_q_heads, cache, tables, options);
  // Row strides in elements of the query type (the cache may hold another type).
  const std::int64_t q_row_elems = static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  detail::checked_row_stride<T>("options.q_row_stride", options.q_row_stride, q_row_elems);
  detail::checked_row_stride<T>("options.out_row_stride", options.out_row_stride, q_row_elems);
  if (tables.num_seqs == 0) return;
  detail::check_decode_pointers(q, out, cache, tables, lse, /*reads_context_lens=*/true);

  const int splits = detail::plan_num_splits(num_q_heads, cache, tables, options);
  const std::size_t needed =
      detail::decode_workspace_bytes(tables.num_seqs, splits, num_q_heads, cache.head_dim);
  if (needed > 0) {
    expects<CapacityError>(workspace_bytes >= needed, "workspace_bytes", workspace_bytes,
                           "is smaller than paged_decode_workspace_bytes()");
    expects(workspace != nullptr, "workspace", "nullptr", "must be a device buffer when splitting");
    expects(detail::is_aligned16(workspace), "workspace", workspace, "must be 16-byte aligned");
  }

  const detail::PagedDecodeKernelInfo<T, TKv> info =
      detail::select_paged_decode_kernel<T, TKv>(cache.head_dim);
  const int device = detail::current_device();
  (void)detail::cached_occupancy(info, cache.head_dim, device);  // sets the smem limit once

  PagedDecodeParams<T, TKv> p{};
  p.q = q;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.block_tables = tables.block_tables;
  p.context_lens = tables.context_lens;
  p.out = out;
  p.lse = lse;
  p.block_table_stride = tables.row_stride;
  const std::int64_t row_elems = static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  p.q_row_stride = options.q_row_stride != 0 ? options.q_row_stride : row_elems;
  p.out_row_stride = options.out_row_stride != 0 ? options.out_row_stride : row_elems;
  p.kv = detail::kv_slot_code(cache);
  p.block_size = cache.block_size;
  p.max_blocks_per_seq = tables.max_blocks_per_seq;
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = cache.num_kv_heads;
  p.group_size = num_q_heads / cache.num_kv_heads;
  p.head_chunks = detail::paged_decode_head_chunks(p.group_size);
  p.num_splits = splits;
  const float scale = options.scale != 0.f ? options.scale : 1.f / std::sqrt(float(cache.head_dim));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.k_scale = options.kv_scales.k_scale;
  p.v_scale = options.kv_scales.v_scale;
  p.scale_head_step = options.kv_scales.mode == KvScaleMode::kPerHead ? 1 : 0;
  if (splits > 1) {
    auto* base = static_cast<unsigned char*>(workspace);
    p.partial_out = reinterpret_cast<float*>(base);
    p.partial_lse = reinterpret_cast<float*>(
        base + detail::partial_out_bytes(tables.num_seqs, splits, num_q_heads, cache.head_dim));
  }
  expects(static_cast<long long>(cache.num_kv_heads) * p.head_chunks <= 65535,
          "cache.num_kv_heads * head chunks",
          static_cast<long long>(cache.num_kv_heads) * p.head_chunks, "must be <= 65535 (grid.y)");

  const dim3 grid(static_cast<unsigned>(splits),
                  static_cast<unsigned>(cache.num_kv_heads * p.head_chunks),
                  static_cast<unsigned>(tables.num_seqs));
  detail::discard_stale_error();  // the launch rule of core/cuda_check.cuh
  info.kernel<<<grid, info.threads, info.smem_bytes, stream>>>(p);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();

  if (splits > 1) {
    MergeStatesParams<T> m{};
    m.partial_out = p.partial_out;
    m.partial_lse = p.partial_lse;
    m.out = out;
    m.lse_out = lse;
    m.out_row_stride = p.out_row_stride;
    m.num_partials = tables.num_seqs * splits;
    m.num_queries = tables.num_seqs;
    m.num_heads = num_q_heads;
    m.head_dim = cache.head_dim;
    m.uniform_count = splits;  // partials of sequence s: [s * splits, (s + 1) * splits)
    detail::launch_merge_states(m, stream);
  }
}

}  // namespace radix_attention
