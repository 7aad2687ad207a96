#pragma once
/// @file
/// AttentionBatch: the engine-facing plan / run wrapper (the shape of FlashInfer's plan/run
/// wrappers). Buffers and workspace are allocated once, at construction, from maxima; plan_*()
/// does a step's host work and ONE asynchronous host-to-device copy; run() launches. The raw
/// launchers (paged_decode, radix_decode, paged_prefill) stay for callers who manage memory
/// themselves.

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/device_query.cuh"
#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/kernels/detail/arch_probe.cuh"
#include "radix_attention/ops/attention_batch_config.hpp"
#include "radix_attention/ops/detail/attention_batch_stager.hpp"
#include "radix_attention/ops/detail/radix_plan_launch.cuh"
#include "radix_attention/ops/merge_states.cuh"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/paged_prefill.cuh"
#include "radix_attention/ops/radix_decode.cuh"

namespace radix_attention {

/**
 * @brief Plan / run of paged decode, radix (shared-prefix) decode and prefill / extend with
 * buffers fixed at construction.
 *
 * Construction allocates, from AttentionBatchConfig's maxima: `num_slots` pinned host staging
 * slots, ONE device buffer of the same layout (context lengths, qo_indptr, block tables
 * [max_batch_size, max_blocks_per_seq], the radix plan packed for a fixed capacity), and one
 * workspace (radix partial states for config.max_partials, paged split-KV partials for any
 * batch size). Nothing is allocated afterwards.
 *
 * A step:
 * @code
 *   // host: check, plan (the stateful BatchPlanner for kRadixDecode), write a staging slot,
 *   // one cudaMemcpyAsync to the device buffer on `stream`; no synchronisation
 *   batch.plan_decode(manager, seqs, AttentionMode::kRadixDecode, stream);
 *   // device: the launches of that mode, reading the device buffer
 *   batch.run(q, cache, out, lse, stream);
 * @endcode
 *
 * Ordering. plan_*() copies into the one device buffer on its stream, run() reads it on its
 * stream: run must be ordered after its plan's copy, and the next plan's copy after that run —
 * both hold when every plan and run of the object is on one stream (or a captured graph
 * launched on it). The staging slots form a ring: planning step i + 1 writes another slot than
 * the copy of step i reads, and each slot is guarded by an event recorded after its copy; a
 * plan waits on that event only when the host is num_slots steps ahead of the GPU.
 *
 * CUDA graphs. Every device pointer run() passes (the device buffer, the workspace, and the
 * caller's q / cache / out / lse) and the launch grid are fixed by the step's LaunchShape
 * (mode, rows, prefill max_q_len): radix decode runs the fixed, persistent grid (the work
 * count is read from the plan on the device) and merges over the plan capacity's partials;
 * paged decode's split-KV factor depends on the launched rows and the maxima only; prefill's
 * grid on rows x max_q_len. So a graph captured around run() replays correctly after any later
 * plan with an equal LaunchShape, whatever its contexts, sharing or query lengths:
 * @code
 *   // once per bucket b (e.g. rows 1, 2, 4, 8, 16, 32, 64, ...):
 *   batch.plan_decode(manager, seqs, mode, stream, PlanPadding{b});      // outside capture
 *   cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal);
 *   batch.run(q, cache, out, lse, stream);                                // q/out: >= b rows
 *   cudaStreamEndCapture(stream, &graph);
 *   cudaGraphInstantiate(&exec[b], graph, 0);
 *   // every step: pad the batch to its bucket, plan, replay
 *   const int b = bucket_for(seqs.size());
 *   batch.plan_decode(manager, seqs, mode, stream, PlanPadding{b});
 *   cudaGraphLaunch(exec[b], stream);
 * @endcode
 * Padding rows have context 0 (outputs 0, lse -inf); plan_*() returns the step's LaunchShape
 * to compare with the captured one. plan_*() itself is never captured (its copy reads a host
 * slot that changes every step: it throws StateError on a capturing stream). The constructor
 * makes the launchers' one-time device queries, so run() makes only capturable calls.
 *
 * Not thread-safe; one object per device (the current device at construction); not movable.
 */
template <class T>
class AttentionBatch {
 public:
  /**
   * @brief Allocates every buffer for `config`'s maxima on the current device.
   * @throw InvalidArgument for an invalid config (naming the field); CudaError if an allocation
   *        or device query fails (nothing is leaked).
   */
  explicit AttentionBatch(AttentionBatchConfig config)
      : stager_(with_device(config), static_cast<std::int32_t>(sizeof(T))) {
    static_assert(is_supported_dtype_v<T>,
                  "AttentionBatch: T must be float, __half or __nv_bfloat16");
    const AttentionBatchConfig& c = stager_.config();
    const detail::AttentionBatchLayout& l = stager_.layout();
    device_ = detail::current_device();
    const auto slot_bytes = static_cast<std::size_t>(l.total) * sizeof(std::int32_t);
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMallocHost(&buffers_.host, slot_bytes * static_cast<std::size_t>(c.num_slots)));
    RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&buffers_.device, slot_bytes));
    workspace_bytes_ = std::max<std::size_t>(
        {radix_decode_workspace_bytes(c.max_partials, c.model.num_q_heads, c.model.head_dim),
         max_paged_workspace_bytes(), 256});
    RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&buffers_.workspace, workspace_bytes_));
    buffers_.events.assign(static_cast<std::size_t>(c.num_slots), nullptr);
    for (cudaEvent_t& event : buffers_.events) {
      RADIX_ATTENTION_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    }
    used_.assign(static_cast<std::size_t>(c.num_slots), false);
    for (int s = 0; s < c.num_slots; ++s) stager_.init_slot(host_slot(s));
    // Rows no step has written yet hold padding on the device too.
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMemcpy(buffers_.device, buffers_.host, slot_bytes, cudaMemcpyHostToDevice));
    warm_up();
  }

  AttentionBatch(const AttentionBatch&) = delete;
  AttentionBatch& operator=(const AttentionBatch&) = delete;

  /**
   * @brief Plans a decode step of `manager`'s sequences (row i = the next token of seqs[i]) and
   * copies it to the device on `stream`.
   * @param mode kPagedDecode or kRadixDecode (the stateful BatchPlanner shares prefixes).
   * @param padding rows to launch (a graph's bucket); 0 = seqs.size().
   * @return the step (valid until the next plan call).
   * @throw CapacityError if seqs.size(), padding.rows or a context exceeds the maxima;
   *        InvalidArgument if a sequence is not live, the manager's block size differs or the
   *        mode / padding is invalid; StateError if `stream` is capturing; CudaError if a CUDA
   *        call fails. On a throw the previous step stays planned and nothing was copied.
   */
  const AttentionStep& plan_decode(const SequenceManager& manager,
                                   const std::vector<SequenceId>& seqs, AttentionMode mode,
                                   cudaStream_t stream, const PlanPadding& padding = {}) {
    return plan_with(stream, [&](int slot, std::int32_t* host) -> const AttentionStep& {
      return stager_.stage_decode(manager, seqs, mode, padding, slot, host);
    });
  }

  /**
   * @brief Plans a decode step of caller-given block tables (host memory; row i = query i).
   * @param row_keys null, or [tables.num_seqs] row identities for the radix planner's
   *        incremental state (see BatchPlanner::plan).
   * @throw as plan_decode(manager, ...); InvalidArgument for inconsistent tables.
   */
  const AttentionStep& plan_decode(const BlockTableView& tables, AttentionMode mode,
                                   cudaStream_t stream, const PlanPadding& padding = {},
                                   const std::int64_t* row_keys = nullptr) {
    return plan_with(stream, [&](int slot, std::int32_t* host) -> const AttentionStep& {
      return stager_.stage_decode(tables, mode, padding, row_keys, slot, host);
    });
  }

  /**
   * @brief Plans a prefill / extend step: row i's q_lens[i] new query rows are the last
   * q_lens[i] tokens of its context (their K/V appended before run()); query rows are packed
   * in row order (qo_indptr).
   * @param padding rows and max_q_len to launch for (a graph's bucket); 0 = the batch's own.
   * @throw CapacityError if the rows, a context, the sum of q_lens or padding exceed the
   *        maxima; InvalidArgument for q_lens of the wrong size or outside [0, context];
   *        otherwise as plan_decode.
   */
  const AttentionStep& plan_prefill(const SequenceManager& manager,
                                    const std::vector<SequenceId>& seqs,
                                    const std::vector<std::int32_t>& q_lens, cudaStream_t stream,
                                    const PlanPadding& padding = {}) {
    return plan_with(stream, [&](int slot, std::int32_t* host) -> const AttentionStep& {
      return stager_.stage_prefill(manager, seqs, q_lens, padding, slot, host);
    });
  }

  /// @brief plan_prefill over caller-given block tables (host memory).
  const AttentionStep& plan_prefill(const BlockTableView& tables,
                                    const std::vector<std::int32_t>& q_lens, cudaStream_t stream,
                                    const PlanPadding& padding = {}) {
    return plan_with(stream, [&](int slot, std::int32_t* host) -> const AttentionStep& {
      return stager_.stage_prefill(tables, q_lens, padding, slot, host);
    });
  }

  /**
   * @brief Runs the planned step on `stream` (capturable into a CUDA graph).
   * @param q decode: [launch.rows, num_q_heads, head_dim]; prefill: [total_q, ...] packed in
   *        row order; device, 16-byte aligned. Padding rows are not read by prefill.
   * @param cache the paged K/V cache (config's block size, kv heads and head_dim; the decode
   *        kernels read the dense NHD layout).
   * @param out like q (every launched row written; padding rows 0).
   * @param lse [rows of out, num_q_heads] float natural-log LSE, or nullptr.
   * @param stream ordered after the plan's copy (see the class comment).
   * @throw StateError if no step is planned; InvalidArgument if the cache does not match the
   *        config or a pointer is invalid; CudaError if a launch fails. Nothing is launched on
   *        a throw.
   */
  void run(const T* q, const PagedKvCacheView<T>& cache, T* out, float* lse, cudaStream_t stream) {
    expects<StateError>(planned_, "step", "none",
                        "plan a step (plan_decode / plan_prefill) before run()");
    const AttentionBatchConfig& c = stager_.config();
    expects(cache.num_kv_heads == c.model.num_kv_heads, "cache.num_kv_heads", cache.num_kv_heads,
            "must equal config.model.num_kv_heads");
    expects(cache.head_dim == c.model.head_dim, "cache.head_dim", cache.head_dim,
            "must equal config.model.head_dim");
    expects(cache.block_size == c.block_size, "cache.block_size", cache.block_size,
            "must equal config.block_size");
    const BlockTableView tables = device_tables();
    switch (step_.launch.mode) {
      case AttentionMode::kPagedDecode: {
        PagedDecodeOptions options;
        options.scale = c.scale;
        options.num_sms = c.device.num_sms;
        paged_decode<T>(q, c.model.num_q_heads, cache, tables, out, lse, buffers_.workspace,
                        workspace_bytes_, stream, options);
        return;
      }
      case AttentionMode::kRadixDecode: {
        const detail::AttentionBatchLayout& l = stager_.layout();
        const detail::DevicePackedPlan plan{buffers_.device + l.plan, l.plan_offsets,
                                            l.capacity.partials,
                                            detail::radix_plan_prefers_tma(step_.plan)};
        detail::launch_packed_radix_plan<T>(q, c.model.num_q_heads, cache, tables, plan, out, lse,
                                            buffers_.workspace, workspace_bytes_, c.scale, stream);
        return;
      }
      case AttentionMode::kPrefill: {
        // The grid is sized by max_q_len; total_q only bounds it on the host (the kernel reads
        // the rows from qo_indptr), so a padded max_q_len may exceed this step's total.
        const PrefillBatchView batch{device_qo_indptr(),
                                     std::max(step_.total_q, step_.launch.max_q_len),
                                     step_.launch.max_q_len};
        PagedPrefillOptions options;
        options.scale = c.scale;
        options.causal = c.causal;
        paged_prefill<T>(q, c.model.num_q_heads, batch, cache, tables, out, lse, stream, options);
        return;
      }
    }
  }

  /// @brief True once a step is planned (and until a plan call fails after its copy).
  bool planned() const { return planned_; }
  /// @brief The planned step.
  const AttentionStep& step() const { return step_; }
  /// @brief The checked config (device, kv_element_bytes and max_partials filled in).
  const AttentionBatchConfig& config() const { return stager_.config(); }
  /// @brief Device workspace size, fixed at construction.
  std::size_t workspace_bytes() const { return workspace_bytes_; }
  /// @brief The device block tables and context lengths of the planned step (fixed addresses).
  BlockTableView device_tables() const {
    const detail::AttentionBatchLayout& l = stager_.layout();
    return BlockTableView{buffers_.device + l.tables,
                          buffers_.device + l.lens,
                          step_.launch.rows,
                          stager_.config().max_blocks_per_seq,
                          l.row_stride,
                          -1};
  }
  /// @brief The device qo_indptr of the planned prefill step (fixed address).
  const std::int32_t* device_qo_indptr() const {
    return buffers_.device + stager_.layout().qo_indptr;
  }
  /// @brief The radix planner (its options, statistics of its cache).
  BatchPlanner& planner() { return stager_.planner(); }

 private:
  /// Owned CUDA resources; released in the destructor, also when the constructor throws.
  struct Buffers {
    std::int32_t* host = nullptr;
    std::int32_t* device = nullptr;
    void* workspace = nullptr;
    std::vector<cudaEvent_t> events;

    Buffers() = default;
    Buffers(const Buffers&) = delete;
    Buffers& operator=(const Buffers&) = delete;
    ~Buffers() {
      // A copy may still read a pinned slot: wait for each before freeing.
      for (cudaEvent_t event : events) {
        if (event == nullptr) continue;
        (void)cudaEventSynchronize(event);
        (void)cudaEventDestroy(event);
      }
      // cudaFree waits for the work that may still read the device buffers.
      if (workspace != nullptr) (void)cudaFree(workspace);
      if (device != nullptr) (void)cudaFree(device);
      if (host != nullptr) (void)cudaFreeHost(host);
    }
  };

  static AttentionBatchConfig with_device(AttentionBatchConfig config) {
    const int d = config.model.head_dim;
    expects(d == 64 || d == 128 || d == 256, "config.model.head_dim", d, "must be 64, 128 or 256");
    if (config.device.num_sms == 0) {
      const DeviceShape shape = radix_decode_device_shape<T>(config.model.head_dim);
      config.device.num_sms = shape.num_sms;
      if (config.device.ctas_per_sm == 0) config.device.ctas_per_sm = shape.ctas_per_sm;
    }
    return config;
  }

  std::int32_t* host_slot(int s) const {
    return buffers_.host + static_cast<std::ptrdiff_t>(s) * stager_.layout().total;
  }

  /// Split-KV partials of paged decode for any launched rows: the split factor (from the rows
  /// and the block-table capacity) is largest for few rows.
  std::size_t max_paged_workspace_bytes() const {
    const AttentionBatchConfig& c = stager_.config();
    const PagedKvCacheView<T> cache{nullptr,         nullptr, 1, c.block_size, c.model.num_kv_heads,
                                    c.model.head_dim};
    PagedDecodeOptions options;
    options.num_sms = c.device.num_sms;
    std::size_t bytes = 0;
    for (int rows = 1; rows <= c.max_batch_size; ++rows) {
      const BlockTableView tables{
          nullptr, nullptr, rows, c.max_blocks_per_seq, c.max_blocks_per_seq, -1};
      const std::size_t need =
          paged_decode_workspace_bytes<T>(c.model.num_q_heads, cache, tables, options);
      if (need == 0) break;  // no split from here on: more rows fill the SMs
      bytes = std::max(bytes, need);
    }
    return bytes;
  }

  /// The launchers' one-time device queries and attribute settings (cached per device), made
  /// here so that run() makes none: a first run() inside stream capture stays capturable.
  void warm_up() {
    const int head_dim = stager_.config().model.head_dim;
    detail::warm_up_radix_decode<T>(head_dim);
    (void)detail::cached_occupancy(detail::select_paged_decode_kernel<T>(head_dim), head_dim,
                                   device_);
    const bool wgmma = DTypeTraits<T>::is_16bit && detail::image_has_wgmma(device_);
    detail::warm_up_paged_prefill<T>(head_dim, wgmma, device_);
    (void)detail::device_supports_pdl();
    (void)detail::device_sm_count(device_);
  }

  template <class Stage>
  const AttentionStep& plan_with(cudaStream_t stream, Stage&& stage) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    expects<StateError>(capture == cudaStreamCaptureStatusNone, "stream", "capturing",
                        "plan runs outside stream capture (capture run() only: the plan's copy "
                        "reads a host slot that changes every step)");
    const int s = next_slot_;
    const auto si = static_cast<std::size_t>(s);
    if (used_[si]) {
      // The slot's previous copy must be done before the host rewrites it: wait only when the
      // host is num_slots steps ahead of the GPU.
      const cudaError_t status = cudaEventQuery(buffers_.events[si]);
      if (status == cudaErrorNotReady) {
        RADIX_ATTENTION_CUDA_CHECK(cudaEventSynchronize(buffers_.events[si]));
      } else {
        RADIX_ATTENTION_CUDA_CHECK(status);
      }
    }
    std::int32_t* host = host_slot(s);
    const AttentionStep& staged = stage(s, host);  // throws before the slot is written
    RADIX_ATTENTION_CUDA_CHECK(cudaMemcpyAsync(buffers_.device, host,
                                               static_cast<std::size_t>(staged.copy_bytes),
                                               cudaMemcpyHostToDevice, stream));
    planned_ = false;  // the device buffer now follows `staged`, not step_
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(buffers_.events[si], stream));
    used_[si] = true;
    step_ = staged;
    planned_ = true;
    next_slot_ = (s + 1) % stager_.config().num_slots;
    return step_;
  }

  detail::AttentionBatchStager stager_;
  Buffers buffers_;
  std::size_t workspace_bytes_ = 0;
  int device_ = 0;
  std::vector<bool> used_;
  int next_slot_ = 0;
  AttentionStep step_{};
  bool planned_ = false;
};

}  // namespace radix_attention
