#pragma once
/// @file
/// Host launcher of paged prefill / extend attention: validates every argument, dispatches
/// (dtype, head_dim) to a kernel instance at one place, and launches on a stream.
///
/// Typical use, after the batch's new K/V rows were appended to the cache:
/// @code
///   radix_attention::PrefillBatchView batch{d_qo_indptr, total_q, max_q_len};
///   radix_attention::paged_prefill(q, num_q_heads, batch, cache, tables, out, lse, stream);
/// @endcode
/// An fp8 e4m3 cache takes the same call with its scales in options.kv_scales (q and out stay
/// __half / __nv_bfloat16); it runs on the mma.sync kernels.

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
#include "radix_attention/kernels/detail/arch_probe.cuh"
#include "radix_attention/kernels/paged_prefill.cuh"
#include "radix_attention/ops/detail/decode_checks.hpp"
#include "radix_attention/ops/detail/kv_scale_checks.hpp"
#include "radix_attention/ops/detail/kv_tensor_maps.hpp"

namespace radix_attention {

/// @brief Options of paged_prefill.
struct PagedPrefillOptions {
  float scale = 0.f;   ///< softmax scale; 0 means 1 / sqrt(head_dim)
  bool causal = true;  ///< causal aligned to the end; false: every row sees the whole context
  /// Use the Hopper wgmma kernels (16-bit inputs, head_dim 64 / 128) where the device runs an
  /// sm_90a image; false keeps the mma.sync kernels everywhere (for comparisons).
  bool allow_wgmma = true;
  /// On the wgmma path, feed K/V by TMA to the warp-specialised persistent kernel where the
  /// block size is a multiple of 8 and the cache's strides suit TMA; false keeps the cp.async
  /// gathers of the two-warpgroup kernel (for comparisons).
  bool allow_tma = true;
  /// Dequantisation scales of an fp8 e4m3 cache (core/kv_scales.hpp; null pointers mean 1);
  /// must stay null for a 16-bit or float cache.
  KvScales kv_scales{};
};

namespace detail {

/// Raises `Kernel`'s dynamic shared-memory limit to SMEM_BYTES on `device`, once per device
/// (later calls, e.g. while a stream is being captured into a graph, touch no CUDA API).
template <auto Kernel, int SMEM_BYTES>
void raise_smem_limit_once(int device) {
  if constexpr (SMEM_BYTES > 48 * 1024) {
    static std::array<std::atomic<bool>, kMaxCachedDevices> done{};
    if (device < kMaxCachedDevices && done[device].load(std::memory_order_relaxed)) return;
    RADIX_ATTENTION_CUDA_CHECK(
        cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM_BYTES));
    if (device < kMaxCachedDevices) done[device].store(true, std::memory_order_relaxed);
  } else {
    (void)device;  // the default 48 KB suffice
  }
}

/// A prefill kernel instance and its launch shape (T: query / output type, TKv: cache type).
template <class T, class TKv = T>
struct PagedPrefillKernelInfo {
  void (*kernel)(PagedPrefillParams<T, TKv>);
  void (*configure)(int device);  ///< raise_smem_limit_once of this instance
  int threads;
  int smem_bytes;
  int rows_per_cta;  ///< (query row, group head) rows one CTA computes
};

/// The info of instance `Kernel`, launched with THREADS threads and SMEM_BYTES of dynamic
/// shared memory, computing ROWS rows per CTA.
template <class T, class TKv, auto Kernel, int THREADS, int SMEM_BYTES, int ROWS>
PagedPrefillKernelInfo<T, TKv> prefill_kernel_info() {
  return {Kernel, &raise_smem_limit_once<Kernel, SMEM_BYTES>, THREADS, SMEM_BYTES, ROWS};
}

/// The prefill kernel instance for (T, TKv, head_dim, Hopper image), outside the TMA kernel.
/// Instantiated: {__half, __nv_bfloat16} x {64, 128} on wgmma (sm_90a image) and x {64, 128, 256}
/// on mma.sync (sm_80+), float x {64, 128, 256} on CUDA cores; an fp8 e4m3 cache with {__half,
/// __nv_bfloat16} queries x {64, 128, 256} on mma.sync only, instantiated where a caller passes
/// one. The GQA group size is a runtime value (rows of a tile).
template <class T, class TKv = T>
PagedPrefillKernelInfo<T, TKv> select_paged_prefill_kernel(int head_dim, bool wgmma) {
  auto make = [wgmma](auto d) -> PagedPrefillKernelInfo<T, TKv> {
    constexpr int D = decltype(d)::value;
    if constexpr (std::is_same_v<TKv, __nv_fp8_e4m3>) {
      (void)wgmma;
      using Tr = PrefillMmaTraits<T, D, TKv>;
      return prefill_kernel_info<T, TKv, &paged_prefill_mma_kernel<T, D, TKv>, Tr::kThreads,
                                 static_cast<int>(Tr::kSmemBytes), Tr::kRows>();
    } else if constexpr (DTypeTraits<T>::is_16bit) {
      if constexpr (D <= 128) {
        if (wgmma) {
          using Tr = PrefillWgmmaTraits<T, D>;
          return prefill_kernel_info<T, T, &paged_prefill_wgmma_kernel<T, D>, Tr::kThreads,
                                     static_cast<int>(Tr::kSmemBytes), Tr::kRows>();
        }
      }
      using Tr = PrefillMmaTraits<T, D>;
      return prefill_kernel_info<T, T, &paged_prefill_mma_kernel<T, D>, Tr::kThreads,
                                 static_cast<int>(Tr::kSmemBytes), Tr::kRows>();
    } else {
      return prefill_kernel_info<T, T, &paged_prefill_simt_kernel<D>, PrefillSimtTraits::kThreads,
                                 0, PrefillSimtTraits::kRows>();
    }
  };
  return dispatch_head_dim(head_dim, make);
}

/// Every check that needs no device pointer: heads, cache, layout, tables, batch, options.
/// T: query / output type, TKv: cache element type.
template <class T, class TKv>
void validate_paged_prefill_shapes(int num_q_heads, const PrefillBatchView& batch,
                                   const PagedKvCacheView<TKv>& cache, const BlockTableView& tables,
                                   const PagedPrefillOptions& options) {
  check_heads_and_cache(num_q_heads, cache);
  // Requests are grid.z of the launch, hence at most 65535 of them.
  check_tables(tables, NumSeqsLimit{65535, "must be in [0, 65535]"});
  check_kv_strides(cache);
  expects(batch.total_q >= 0, "batch.total_q", batch.total_q, "must be >= 0");
  expects(batch.max_q_len >= 0 && batch.max_q_len <= batch.total_q, "batch.max_q_len",
          batch.max_q_len, "must be in [0, batch.total_q]");
  const std::int64_t row_elems = static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  checked_row_stride<T>("batch.q_row_stride", batch.q_row_stride, row_elems);
  checked_row_stride<T>("batch.out_row_stride", batch.out_row_stride, row_elems);
  expects(static_cast<std::int64_t>(batch.total_q) * num_q_heads <= INT32_MAX,
          "batch.total_q * num_q_heads", static_cast<std::int64_t>(batch.total_q) * num_q_heads,
          "must fit in int32");
  expects(cache.num_kv_heads <= 65535, "cache.num_kv_heads", cache.num_kv_heads,
          "must be <= 65535 (grid.y)");
  expects(std::isfinite(options.scale), "options.scale", options.scale, "must be finite");
  check_read_scales<TKv>(options.kv_scales, "options.kv_scales");
}

/// Raises the TMA kernel's shared-memory limit on `device` (once per device).
template <class T, int D>
void configure_paged_prefill_tma(int device) {
  raise_smem_limit_once<&paged_prefill_tma_kernel<T, D>,
                        static_cast<int>(PrefillTmaTraits<T, D>::kSmemBytes)>(device);
}

/// Launches the TMA-fed warp-specialised kernel (prefill_wgmma_tma.cuh) when `cache` suits TMA;
/// returns false, launching nothing, when it does not. The grid is persistent (one CTA per SM
/// over the longest-first schedule) when the batch's row tiles are nearly all non-empty, and
/// one CTA per scheduled item when most are empty (a ragged batch, where a persistent CTA
/// would walk many empty items).
template <class T>
bool launch_paged_prefill_tma(const PagedPrefillParams<T>& p, const PagedKvCacheView<T>& cache,
                              const PrefillBatchView& batch, int num_seqs, int device,
                              cudaStream_t stream) {
  if constexpr (!DTypeTraits<T>::is_16bit) {
    return false;
  } else {
    PagedPrefillTmaParams<T> tp{};
    if (cache.head_dim > 128 || !encode_kv_tensor_maps(cache, tp.maps)) return false;
    auto launch = [&](auto d) {
      constexpr int D = decltype(d)::value;
      if constexpr (D <= 128) {
        using Tr = PrefillTmaTraits<T, D>;
        const std::int64_t rows = static_cast<std::int64_t>(batch.max_q_len) * p.group_size;
        const std::int64_t tiles_per_seq = (rows + Tr::kRows - 1) / Tr::kRows;
        const std::int64_t items = tiles_per_seq * num_seqs * cache.num_kv_heads;
        expects(items <= INT32_MAX, "batch.max_q_len * group * num_seqs * num_kv_heads / rows",
                items, "must fit in int32");
        const std::int64_t nonempty_bound =
            ((static_cast<std::int64_t>(batch.total_q) * p.group_size + Tr::kRows - 1) / Tr::kRows +
             num_seqs) *
            cache.num_kv_heads;
        const std::int64_t sms = device_sm_count(device);
        const std::int64_t grid = items <= 2 * nonempty_bound ? std::min(items, sms) : items;
        tp.base = p;
        tp.schedule = {static_cast<int>(tiles_per_seq), num_seqs, cache.num_kv_heads,
                       static_cast<int>(items)};
        configure_paged_prefill_tma<T, D>(device);
        discard_stale_error();  // a launch reports its own failure, not an earlier one
        paged_prefill_tma_kernel<T, D>
            <<<static_cast<unsigned>(grid), Tr::kThreads, Tr::kSmemBytes, stream>>>(tp);
        RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
      }
    };
    dispatch_head_dim(cache.head_dim, launch);
    return true;
  }
}

/// The one-time host work of the prefill kernels for (T, head_dim) on `device`: shared-memory
/// limits raised, the tensor-map encoder looked up. After it, launches make no CUDA call but
/// the launch itself (what a first launch inside stream capture needs).
template <class T>
void warm_up_paged_prefill(int head_dim, bool wgmma, int device) {
  select_paged_prefill_kernel<T>(head_dim, wgmma).configure(device);
  if constexpr (DTypeTraits<T>::is_16bit) {
    if (wgmma && head_dim <= 128 && tensor_map_encoder() != nullptr) {
      dispatch_head_dim(head_dim, [&](auto d) {
        constexpr int D = decltype(d)::value;
        if constexpr (D <= 128) {
          configure_paged_prefill_tma<T, D>(device);
        }
      });
    }
  }
  (void)device_sm_count(device);
}

/// THE dispatch point of the prefill family: the TMA-fed warp-specialised kernel where `tma`
/// is allowed and the cache suits it, else the kernel select_paged_prefill_kernel names for
/// (T, TKv, head_dim, wgmma), on one grid of (row tiles, kv heads, requests). Throws (and
/// launches nothing) when the grid does not fit.
template <class T, class TKv>
void launch_paged_prefill(const PagedPrefillParams<T, TKv>& p, const PagedKvCacheView<TKv>& cache,
                          const PrefillBatchView& batch, int num_seqs, bool tma, bool wgmma,
                          int device, cudaStream_t stream) {
  if constexpr (std::is_same_v<TKv, T>) {
    if (tma && launch_paged_prefill_tma(p, cache, batch, num_seqs, device, stream)) return;
  }
  const PagedPrefillKernelInfo<T, TKv> info =
      select_paged_prefill_kernel<T, TKv>(cache.head_dim, wgmma);
  const std::int64_t tiles =
      (static_cast<std::int64_t>(batch.max_q_len) * p.group_size + info.rows_per_cta - 1) /
      info.rows_per_cta;
  expects(tiles <= INT32_MAX, "batch.max_q_len * group / rows per CTA", tiles,
          "must fit in grid.x");
  info.configure(device);
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(cache.num_kv_heads),
                  static_cast<unsigned>(num_seqs));
  discard_stale_error();  // a launch reports its own failure, not an earlier one
  info.kernel<<<grid, info.threads, info.smem_bytes, stream>>>(p);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
}

}  // namespace detail

/**
 * @brief Prefill / extend attention over a paged KV cache for a varlen batch.
 *
 * Request s owns query rows [qo_indptr[s], qo_indptr[s + 1]) (q_len rows) and a context of
 * kv_len = tables.context_lens[s] tokens (its cached prefix plus the new tokens, whose K/V must
 * already be in the cache). Row i of the request, query head h, attends with kv head
 * h / (num_q_heads / num_kv_heads) to tokens [0, kv_len - q_len + i + 1) under the causal mask
 * (options.causal) or [0, kv_len) without it. A row that sees no token gets out = 0 and
 * lse = -inf. Accumulation is in float; 16-bit inputs run on tensor cores.
 *
 * An fp8 e4m3 cache (TKv = __nv_fp8_e4m3, T = __half or __nv_bfloat16) is read with the
 * scales of options.kv_scales: the result is attention over the dequantised cache
 * (stored * scale, core/kv_scales.hpp), with the K scale folded into the softmax scale and the
 * V scale into the output; it runs on the mma.sync kernels (not the wgmma ones), correct but
 * not tuned. Scales are device data: positive and finite (bounds-check builds trap otherwise).
 *
 * @param q [total_q rows, num_q_heads, head_dim] of T (rows batch.q_row_stride apart), device,
 *        16-byte aligned.
 * @param num_q_heads query heads, a multiple of cache.num_kv_heads.
 * @param batch qo_indptr (device, [num_seqs + 1], qo_indptr[0] = 0, non-decreasing, last =
 *        total_q, every q_len <= max_q_len) and the host-known sizes. These are device data the
 *        launcher does not read: RADIX_ATTENTION_KERNEL_BOUNDS_CHECK makes the kernel trap on
 *        inconsistent ones.
 * @param cache K/V of TKv (T, or __nv_fp8_e4m3 for 16-bit T; any layout through the view's
 *        strides, 16-byte multiples); head_dim in {64, 128, 256}.
 * @param tables block tables + context lengths (device), as for paged_decode.
 * @param out like q (rows batch.out_row_stride apart), written for every row.
 * @param lse [total_q, num_q_heads] float natural-log LSE of the scaled scores, or nullptr.
 * @param stream stream to launch on.
 * @param options softmax scale, mask, fp8 scales.
 * @throw InvalidArgument on a null or misaligned pointer or invalid shapes; CudaError if a CUDA
 *        call fails. Nothing is launched on a throw.
 */
template <class T, class TKv>
void paged_prefill(const T* q, int num_q_heads, const PrefillBatchView& batch,
                   const PagedKvCacheView<TKv>& cache, const BlockTableView& tables, T* out,
                   float* lse, cudaStream_t stream, const PagedPrefillOptions& options = {}) {
  static_assert(is_supported_dtype_v<T>, "paged_prefill: T must be float, __half or __nv_bfloat16");
  static_assert(
      std::is_same_v<TKv, T> || (std::is_same_v<TKv, __nv_fp8_e4m3> && DTypeTraits<T>::is_16bit),
      "paged_prefill: the cache holds T, or fp8 e4m3 with __half / __nv_bfloat16 q");
  detail::validate_paged_prefill_shapes<T>(num_q_heads, batch, cache, tables, options);
  if (tables.num_seqs == 0 || batch.total_q == 0 || batch.max_q_len == 0) return;
  detail::check_decode_pointers(q, out, cache, tables, lse, /*reads_context_lens=*/true);
  expects(batch.qo_indptr != nullptr, "batch.qo_indptr", "nullptr", "must be a device pointer");

  const int device = detail::current_device();
  const bool wgmma = DTypeTraits<T>::is_16bit && std::is_same_v<TKv, T> && options.allow_wgmma &&
                     detail::image_has_wgmma(device);
  const int group = num_q_heads / cache.num_kv_heads;

  const std::int64_t row_elems = static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  const KvStrides strides = resolved_strides(cache);
  detail::PagedPrefillParams<T, TKv> p{};
  p.q = q;
  p.out = out;
  p.lse = lse;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.qo_indptr = batch.qo_indptr;
  p.block_tables = tables.block_tables;
  p.context_lens = tables.context_lens;
  p.table_stride = tables.row_stride;
  p.q_row_stride = batch.q_row_stride != 0 ? batch.q_row_stride : row_elems;
  p.out_row_stride = batch.out_row_stride != 0 ? batch.out_row_stride : row_elems;
  p.layout = {strides.block, strides.token, strides.head, cache.num_blocks};
  p.block_size = cache.block_size;
  p.num_q_heads = num_q_heads;
  p.group_size = group;
  p.max_blocks_per_seq = tables.max_blocks_per_seq;
  p.num_blocks = cache.num_blocks;
  const float scale = options.scale != 0.f ? options.scale : 1.f / std::sqrt(float(cache.head_dim));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.causal = options.causal;
  p.k_scale = options.kv_scales.k_scale;
  p.v_scale = options.kv_scales.v_scale;
  p.scale_head_step = options.kv_scales.mode == KvScaleMode::kPerHead ? 1 : 0;

  detail::launch_paged_prefill(p, cache, batch, tables.num_seqs, wgmma && options.allow_tma, wgmma,
                               device, stream);
}

}  // namespace radix_attention
