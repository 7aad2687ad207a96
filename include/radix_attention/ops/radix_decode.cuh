#pragma once
/// @file
/// Host launcher of radix (shared-prefix) decode attention: executes an uploaded RadixPlan
/// (DeviceRadixPlan) with one radix kernel launch, then one merge_states launch (a programmatic
/// dependent of the radix kernel) combines each query's partial states into its output row.
/// Every argument is checked before anything is launched. An fp8 e4m3 cache (written by
/// kv_append) is read with options.kv_scales; q and out stay __half / __nv_bfloat16.

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>

#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/device_query.cuh"
#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/fp8.cuh"
#include "radix_attention/core/kv_scales.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/detail/arch_probe.cuh"
#include "radix_attention/kernels/radix_decode.cuh"
#include "radix_attention/ops/detail/decode_checks.hpp"
#include "radix_attention/ops/detail/kv_scale_checks.hpp"
#include "radix_attention/ops/detail/kv_slot_code.cuh"
#include "radix_attention/ops/detail/kv_tensor_maps.hpp"
#include "radix_attention/ops/device_radix_plan.cuh"
#include "radix_attention/ops/merge_states.cuh"

namespace radix_attention {

/// @brief The radix-decode kernels. kTma: the warp-specialised wgmma kernel
/// (kernels/detail/radix_tma.cuh) over the plan's wide work list, where T and the cache are
/// 16-bit, head_dim is 64 or 128, the block size a multiple of 8, the strides TMA-describable
/// and the device runs an sm_90a image (elsewhere the mma.sync kernel runs); kMma: the mma.sync
/// (CUDA-core for float) kernel; kAuto: kTma for the plans detail::radix_plan_prefers_tma
/// names (shared chunks of more than 64 rows, batch-invariant plans), else kMma.
enum class RadixDecodeKernel { kAuto, kTma, kMma };

/// @brief Options of radix_decode; the defaults are what a serving engine wants.
struct RadixDecodeOptions {
  float scale = 0.f;  ///< softmax scale; 0 means 1 / sqrt(head_dim)
  /// Launch a fixed, persistent grid (SMs x resident CTAs) that reads the work count from the
  /// plan on the device: the launch can then be captured in a CUDA graph and replayed for any
  /// later plan that fits the DeviceRadixPlan's capacity (see DeviceRadixPlan::reserve) and has
  /// the same number of queries (the merge's grid is sized by the batch) and the same buffers.
  bool fixed_grid = false;
  /// When set, the plan's batch_fingerprint must equal it (else StateError): pass the current
  /// batch's fingerprint to reject a plan built before the sequences changed.
  std::optional<std::uint64_t> expected_batch_fingerprint;
  /// Elements between rows (queries) of q; 0 = num_q_heads * head_dim (dense). Larger for a
  /// slice of a fused QKV projection or a tensor-parallel rank's heads (as in
  /// PrefillBatchView); a multiple of 16 bytes.
  std::int64_t q_row_stride = 0;
  std::int64_t out_row_stride = 0;  ///< elements between rows of out; 0 = dense, as q's
  /// Dequantisation scales of an fp8 e4m3 cache (core/kv_scales.hpp; null pointers mean 1);
  /// must stay null for a 16-bit or float cache.
  KvScales kv_scales{};
  /// Which radix kernel runs (RadixDecodeKernel); the default picks by the plan.
  RadixDecodeKernel kernel = RadixDecodeKernel::kAuto;
};

namespace detail {

/// A radix kernel instance and its launch shape (T: query / output type, TKv: cache type).
template <class T, class TKv = T>
struct RadixKernelInfo {
  void (*kernel)(RadixKernelParams<T, TKv>);
  int threads;
  int smem_bytes;
};

/// THE dispatch point: (T, TKv, head_dim) -> kernel instance. Instantiated: {__half,
/// __nv_bfloat16} x {64, 128, 256} on tensor cores; {float} x {64, 128, 256} on CUDA cores;
/// for an fp8 e4m3 cache, {__half, __nv_bfloat16} queries x {64, 128, 256} on tensor cores,
/// only where a caller passes one. The GQA group size is a runtime value (rows of a work item).
template <class T, class TKv = T>
RadixKernelInfo<T, TKv> select_radix_kernel(int head_dim) {
  auto make = [](auto d) -> RadixKernelInfo<T, TKv> {
    constexpr int D = decltype(d)::value;
    if constexpr (DTypeTraits<T>::is_16bit) {
      using Tr = RadixMmaTraits<T, D, TKv>;
      return {&radix_decode_mma_kernel<T, D, TKv>, Tr::kThreads, static_cast<int>(Tr::kSmemBytes)};
    } else {
      return {&radix_decode_simt_kernel<T, D>, RadixSimtTraits::kThreads, 0};
    }
  };
  return dispatch_head_dim(head_dim, make);
}

/// Raises the instance's shared-memory limit and returns its resident CTAs per SM x SMs,
/// once per (instance, device).
template <class T, class TKv>
int radix_grid_slots(const RadixKernelInfo<T, TKv>& info, int head_dim) {
  constexpr int kDevices = 64;
  static std::array<std::atomic<int>, 3 * kDevices> cache{};
  const int device = current_device();
  const int index = (head_dim == 64 ? 0 : head_dim == 128 ? 1 : 2) * kDevices + device;
  if (device < kDevices && cache[index].load(std::memory_order_relaxed) > 0) {
    return cache[index].load(std::memory_order_relaxed);
  }
  if (info.smem_bytes > 48 * 1024) {
    RADIX_ATTENTION_CUDA_CHECK(cudaFuncSetAttribute(
        info.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, info.smem_bytes));
  }
  int ctas = 0;
  RADIX_ATTENTION_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
      &ctas, info.kernel, info.threads, static_cast<std::size_t>(info.smem_bytes)));
  expects_that<CudaError>(ctas >= 1, "radix_decode: kernel for head_dim ", head_dim,
                          " does not fit on device ", device);
  const int slots = ctas * device_sm_count(device);
  if (device < kDevices) cache[index].store(slots, std::memory_order_relaxed);
  return slots;
}

inline std::size_t radix_align256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

/// Raises the TMA radix kernel's shared-memory limit on `device` (once per device).
template <class T, int D>
void configure_radix_decode_tma(int device) {
  static std::array<std::atomic<bool>, kMaxCachedDevices> done{};
  if (device < kMaxCachedDevices && done[device].load(std::memory_order_relaxed)) return;
  RADIX_ATTENTION_CUDA_CHECK(cudaFuncSetAttribute(
      &radix_decode_tma_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
      static_cast<int>(RadixTmaTraits<T, D>::kSmemBytes)));
  if (device < kMaxCachedDevices) done[device].store(true, std::memory_order_relaxed);
}

/// The one-time host work of the radix kernels for (T, head_dim) on the current device: the
/// image probe, shared-memory limits, occupancy, the tensor-map encoder. After it a launch
/// makes no CUDA call but the launches themselves (a first launch inside stream capture).
template <class T, class TKv = T>
void warm_up_radix_decode(int head_dim) {
  const int device = current_device();
  (void)radix_grid_slots(select_radix_kernel<T, TKv>(head_dim), head_dim);
  if constexpr (DTypeTraits<T>::is_16bit && std::is_same_v<TKv, T>) {
    if (head_dim <= 128 && image_has_wgmma(device) && tensor_map_encoder() != nullptr) {
      dispatch_head_dim(head_dim, [&](auto d) {
        constexpr int D = decltype(d)::value;
        if constexpr (D <= 128) configure_radix_decode_tma<T, D>(device);
      });
    }
  }
  (void)device_sm_count(device);
}

}  // namespace detail

/**
 * @brief The current device as a BatchPlanner sizes its split-KV chunks for it: the SM count
 * and the CTAs per SM the radix-decode kernel for (T, head_dim) keeps resident (their product
 * is the grid of a fixed_grid launch: one wave). TKv: the cache element type (T, or
 * __nv_fp8_e4m3 for an fp8 cache read with 16-bit queries T). It also makes the launchers'
 * one-time queries for (T, head_dim) on this device (image probe, shared-memory limits, the
 * tensor-map encoder), so that a first radix_decode inside stream capture makes no other call.
 * @throw InvalidArgument for an unsupported head_dim; CudaError if a CUDA query fails.
 */
template <class T, class TKv = T>
DeviceShape radix_decode_device_shape(int head_dim) {
  detail::warm_up_radix_decode<T, TKv>(head_dim);  // so a later launch may be captured first
  const detail::RadixKernelInfo<T, TKv> info = detail::select_radix_kernel<T, TKv>(head_dim);
  const int slots = detail::radix_grid_slots(info, head_dim);
  const int sms = detail::device_sm_count(detail::current_device());
  return DeviceShape{sms, slots / sms};
}

/**
 * @brief Device workspace radix_decode needs for up to `max_partials` partial states:
 * float outputs [max_partials, num_q_heads, head_dim], then (256-byte aligned) float LSEs
 * [max_partials, num_q_heads]. Size it with the plan's capacity().partials.
 * @throw InvalidArgument on negative sizes.
 */
inline std::size_t radix_decode_workspace_bytes(std::int64_t max_partials, int num_q_heads,
                                                int head_dim) {
  expects(max_partials >= 0, "max_partials", max_partials, "must be >= 0");
  expects(num_q_heads >= 1, "num_q_heads", num_q_heads, "must be >= 1");
  expects(head_dim >= 1, "head_dim", head_dim, "must be >= 1");
  const auto rows = static_cast<std::size_t>(max_partials) * static_cast<std::size_t>(num_q_heads);
  return detail::radix_align256(rows * static_cast<std::size_t>(head_dim) * sizeof(float)) +
         detail::radix_align256(rows * sizeof(float));
}

/// @brief Workspace for `plan`'s capacity (what radix_decode checks against).
inline std::size_t radix_decode_workspace_bytes(const DeviceRadixPlan& plan, int num_q_heads,
                                                int head_dim) {
  return radix_decode_workspace_bytes(plan.capacity().partials, num_q_heads, head_dim);
}

namespace detail {

/// Checks everything that does not need the plan: shapes, scale, pointers and alignment.
template <class T, class TKv>
void validate_radix_decode_args(const T* q, int num_q_heads, const PagedKvCacheView<TKv>& cache,
                                const BlockTableView& tables, const T* out, const float* lse,
                                const RadixDecodeOptions& options) {
  static_assert(is_supported_dtype_v<T>, "radix_decode: T must be float, __half or __nv_bfloat16");
  static_assert(
      std::is_same_v<TKv, T> || (std::is_same_v<TKv, __nv_fp8_e4m3> && DTypeTraits<T>::is_16bit),
      "radix_decode: the cache holds T, or fp8 e4m3 with __half / __nv_bfloat16 q");
  check_decode_shapes(num_q_heads, cache, tables, NumSeqsLimit{INT32_MAX, "must be >= 0"});
  expects(std::isfinite(options.scale) && options.scale >= 0.f, "options.scale", options.scale,
          "must be finite and >= 0 (0 = 1 / sqrt(head_dim))");
  const std::int64_t row_elems = static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  checked_row_stride<T>("options.q_row_stride", options.q_row_stride, row_elems);
  checked_row_stride<T>("options.out_row_stride", options.out_row_stride, row_elems);
  (void)kv_slot_code(cache);  // throws for a layout the kernels cannot address
  check_read_scales<TKv>(options.kv_scales, "options.kv_scales");
  if (tables.num_seqs == 0) return;
  check_decode_pointers(q, out, cache, tables, lse, /*reads_context_lens=*/false);
}

}  // namespace detail

/**
 * @brief Radix (shared-prefix) decode attention: executes `plan` over the paged KV cache.
 *
 * For every query s and head h: out[s][h] = softmax(scale * q[s][h] . K^T) V over tokens
 * [0, context_lens[s]) of s, exactly as paged_decode computes it, but each chunk of the plan
 * (a token range shared by several queries) is read from memory once for all its queries.
 * A query with context length 0 gets out = 0 and lse = -inf.
 *
 * @param q [num_queries, num_q_heads, head_dim] of T, device, 16-byte aligned; rows
 *        options.q_row_stride elements apart (0 = dense), heads dense within a row.
 * @param num_q_heads query heads, a multiple of cache.num_kv_heads.
 * An fp8 e4m3 cache (TKv = __nv_fp8_e4m3, T = __half or __nv_bfloat16) is read with the
 * scales of options.kv_scales: the result is attention over the dequantised cache
 * (stored * scale, core/kv_scales.hpp), with the K scale folded into the softmax scale and the
 * V scale into the output. Scales are device data: positive and finite (bounds-check builds
 * trap otherwise). Plan its chunks with radix_decode_device_shape<T, __nv_fp8_e4m3>.
 *
 * @param cache K/V caches of TKv (T, or __nv_fp8_e4m3 for 16-bit T); head_dim in
 *        {64, 128, 256}; k, v 16-byte aligned; any layout through the view's strides (NHD,
 *        HND, combined; multiples of 16 bytes).
 * @param tables the batch's block tables (device; row q belongs to query q). Block ids are not
 *        read here (see validate_block_tables); context_lens are not read by the kernel.
 * @param plan plan uploaded for this batch (plan.num_queries == tables.num_seqs, group size
 *        num_q_heads / num_kv_heads), on the same stream or one ordered before `stream`.
 * @param out [num_queries, num_q_heads, head_dim] of T, device; rows options.out_row_stride
 *        elements apart (0 = dense). Nothing between rows is written.
 * @param lse [num_queries, num_q_heads] float natural-log LSE (dense), or nullptr.
 * @param workspace >= radix_decode_workspace_bytes(plan, num_q_heads, head_dim) bytes, 16-byte
 *        aligned; never allocated here.
 * @param workspace_bytes its size.
 * @param stream stream of the radix kernel and of the merge that follows it.
 * @param options scale, fixed grid, expected batch fingerprint, q / out row strides, fp8 scales.
 * @throw InvalidArgument on null/misaligned pointers, bad shapes or a plan that does not match
 *        the batch; StateError if the plan was never uploaded or its fingerprint is stale;
 *        CapacityError if the workspace is too small; CudaError if a launch fails.
 *        Nothing is launched on a throw.
 */
namespace detail {

/// The launch shared by radix_decode and AttentionBatch (arguments already checked): the radix
/// kernel over a packed plan's device view, then merge_states over its partials.
/// `total_work` = work items x kv heads for a grid of one CTA per unit, or -1 for the fixed,
/// persistent grid that reads the count from the plan's header. Partial ids are bounded by the
/// plan buffer's capacity (`capacity_partials`), which (unlike the plan's count) a captured
/// launch replayed with a later plan still matches.
/// Launches the TMA radix kernel over the plan's wide list when T, the cache and the device
/// suit it (see RadixDecodeKernel::kTma); false, launching nothing, otherwise.
/// `num_wide_items` < 0: a fixed grid (one CTA per SM) that reads the count from the plan.
template <class T, class TKv>
bool launch_radix_decode_tma(const RadixKernelParams<T, TKv>& p, const PagedKvCacheView<TKv>& cache,
                             int num_wide_items, int device, cudaStream_t stream) {
  if constexpr (!DTypeTraits<T>::is_16bit || !std::is_same_v<TKv, T>) {
    return false;
  } else {
    if (cache.head_dim > 128 || !image_has_wgmma(device)) return false;
    RadixTmaParams<T> tp{};
    // Chunks start on multiples of 64 tokens (the planner's alignment): boxes of at most 64
    // rows keep their full tiles on the TMA path at any block size.
    if (!encode_kv_tensor_maps(cache, tp.maps, kRadixKvTileTokens)) return false;
    const KvStrides strides = resolved_strides(cache);
    tp.base = p;
    tp.layout = {strides.block, strides.token, strides.head, cache.num_blocks};
    const std::int64_t sms = device_sm_count(device);
    std::int64_t grid = sms;
    if (num_wide_items >= 0) {
      const std::int64_t work = static_cast<std::int64_t>(num_wide_items) * cache.num_kv_heads;
      expects(work <= INT32_MAX, "wide work items x num_kv_heads", work, "must fit in int32");
      tp.base.total_work = static_cast<int>(work);
      grid = std::min(work, sms);
    } else {
      tp.base.total_work = -1;
    }
    dispatch_head_dim(cache.head_dim, [&](auto d) {
      constexpr int D = decltype(d)::value;
      if constexpr (D <= 128) {
        configure_radix_decode_tma<T, D>(device);
        if (grid > 0) {
          discard_stale_error();  // a launch reports its own failure, not an earlier one
          radix_decode_tma_kernel<T, D>
              <<<static_cast<unsigned>(grid), RadixTmaTraits<T, D>::kThreads,
                 RadixTmaTraits<T, D>::kSmemBytes, stream>>>(tp);
          RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
        }
      }
    });
    return true;
  }
}

/**
 * Whether a plan runs on the TMA wgmma kernel (where the device and cache allow it) rather
 * than the mma.sync one. Measured on an H200 (bf16, 32 q / 8 kv heads, head_dim 128, planner
 * plans): the wgmma kernel is faster on shared chunks of more than 64 rows (64 x (4096 + 128):
 * 42.8 vs 46.3 us, 256 x (2048 + 64): 72.9 vs 94.2 us) and slower on plans of private segments
 * only (64 x 4096 without sharing: 313 vs 258 us; bench/RESULTS.md). Batch-invariant plans always
 * take it: the choice must not depend on the batch, and there it needs no narrow work items.
 */
inline bool radix_plan_prefers_tma(const RadixPlanSummary& s) {
  return s.batch_invariant || s.num_shared_wide_items > 0;
}

/// Launches the radix kernels over `plan_view` and the merge. `num_items` / `num_wide_items`:
/// the plan's two work lists (summary), or -1 for a fixed grid that reads them on the device;
/// `plan_prefers_tma`: radix_plan_prefers_tma of the plan, for options.kernel = kAuto (any
/// plan runs correctly on either kernel, so a graph captured with one plan stays correct for
/// the later ones it replays).
template <class T, class TKv>
void launch_radix_decode(const T* q, int num_q_heads, const PagedKvCacheView<TKv>& cache,
                         const BlockTableView& tables, const RadixPlanView& plan_view,
                         std::int64_t capacity_partials, const std::int32_t* query_partial_indptr,
                         const std::int32_t* query_partials, int num_queries, int num_items,
                         int num_wide_items, bool plan_prefers_tma, T* out, float* lse,
                         void* workspace, cudaStream_t stream, const RadixDecodeOptions& options) {
  const RadixKernelInfo<T, TKv> info = select_radix_kernel<T, TKv>(cache.head_dim);
  RadixKernelParams<T, TKv> p{};
  p.q = q;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.block_tables = tables.block_tables;
  p.block_table_stride = tables.row_stride;
  p.q_row_stride = options.q_row_stride != 0
                       ? options.q_row_stride
                       : static_cast<std::int64_t>(num_q_heads) * cache.head_dim;
  p.kv = kv_slot_code(cache);
  auto* base = static_cast<unsigned char*>(workspace);
  const auto rows = static_cast<std::size_t>(capacity_partials) * num_q_heads;
  p.partial_out = reinterpret_cast<float*>(base);
  p.partial_lse = reinterpret_cast<float*>(
      base + radix_align256(rows * static_cast<std::size_t>(cache.head_dim) * sizeof(float)));
  p.plan = plan_view;
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = cache.num_kv_heads;
  p.group_size = num_q_heads / cache.num_kv_heads;
  p.block_size = cache.block_size;
  const float scale =
      options.scale != 0.f ? options.scale : 1.f / std::sqrt(static_cast<float>(cache.head_dim));
  p.scale_log2 = scale * 1.4426950408889634f;
  p.k_scale = options.kv_scales.k_scale;
  p.v_scale = options.kv_scales.v_scale;
  p.scale_head_step = options.kv_scales.mode == KvScaleMode::kPerHead ? 1 : 0;
  const int device = current_device();
  const bool tma = options.kernel == RadixDecodeKernel::kTma ||
                   (options.kernel == RadixDecodeKernel::kAuto && plan_prefers_tma);
  if (!tma || !launch_radix_decode_tma(p, cache, num_wide_items, device, stream)) {
    const std::int64_t work = static_cast<std::int64_t>(num_items) * cache.num_kv_heads;
    expects(work <= INT32_MAX, "work items x num_kv_heads", work, "must fit in int32");
    p.total_work = num_items < 0 ? -1 : static_cast<int>(work);
    // radix_grid_slots also raises the instance's shared-memory limit (once per device): call
    // it whichever grid is launched.
    const int slots = radix_grid_slots(info, cache.head_dim);
    const unsigned grid = static_cast<unsigned>(p.total_work < 0 ? slots : p.total_work);
    if (grid > 0) {
      discard_stale_error();  // the launch rule of core/cuda_check.cuh
      info.kernel<<<grid, info.threads, info.smem_bytes, stream>>>(p);
      RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    }
  }
  merge_states<T>(p.partial_out, p.partial_lse, static_cast<int>(capacity_partials), num_q_heads,
                  cache.head_dim, query_partial_indptr, query_partials, num_queries, out, lse,
                  stream, options.out_row_stride);
}

}  // namespace detail

template <class T, class TKv>
void radix_decode(const T* q, int num_q_heads, const PagedKvCacheView<TKv>& cache,
                  const BlockTableView& tables, const DeviceRadixPlan& plan, T* out, float* lse,
                  void* workspace, std::size_t workspace_bytes, cudaStream_t stream,
                  const RadixDecodeOptions& options = {}) {
  detail::validate_radix_decode_args(q, num_q_heads, cache, tables, out, lse, options);
  expects<StateError>(plan.uploaded(), "plan", "not uploaded",
                      "upload a RadixPlan (DeviceRadixPlan::upload) before radix_decode");
  const int group = num_q_heads / cache.num_kv_heads;
  expects(plan.num_queries() == tables.num_seqs, "plan.num_queries()", plan.num_queries(),
          "must equal tables.num_seqs (the plan was built for another batch)");
  expects(plan.group_size() == group, "plan.group_size()", plan.group_size(),
          "must equal num_q_heads / cache.num_kv_heads");
  const std::int64_t capacity =
      static_cast<std::int64_t>(tables.max_blocks_per_seq) * cache.block_size;
  expects(plan.summary().max_token_end <= capacity, "plan chunk_token_end",
          plan.summary().max_token_end,
          "exceeds tables.max_blocks_per_seq * cache.block_size (block-table rows too short)");
  if (options.expected_batch_fingerprint.has_value()) {
    expects<StateError>(plan.batch_fingerprint() == *options.expected_batch_fingerprint,
                        "plan.batch_fingerprint()", plan.batch_fingerprint(),
                        "differs from the batch's: the plan is stale, rebuild and upload it");
  }
  if (tables.num_seqs == 0) return;
  const std::size_t needed = radix_decode_workspace_bytes(plan, num_q_heads, cache.head_dim);
  expects<CapacityError>(workspace_bytes >= needed, "workspace_bytes", workspace_bytes,
                         "is smaller than radix_decode_workspace_bytes(plan, ...)");
  expects(workspace != nullptr || needed == 0, "workspace", "nullptr", "must be a device buffer");
  expects(detail::is_aligned16(workspace), "workspace", workspace, "must be 16-byte aligned");

  const bool fixed = options.fixed_grid;
  detail::launch_radix_decode(
      q, num_q_heads, cache, tables, plan.view(), plan.capacity().partials,
      plan.query_partial_indptr(), plan.query_partials(), plan.num_queries(),
      fixed ? -1 : plan.summary().num_items, fixed ? -1 : plan.summary().num_wide_items,
      detail::radix_plan_prefers_tma(plan.summary()), out, lse, workspace, stream, options);
}

}  // namespace radix_attention
