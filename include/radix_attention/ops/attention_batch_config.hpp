#pragma once
/// @file
/// What an AttentionBatch (ops/attention_batch.cuh) is built with and what one planned step
/// looks like: its maxima (AttentionBatchConfig), the padding of a step to a CUDA-graph bucket
/// (PlanPadding), and the shape a captured launch depends on (LaunchShape). Plain C++17.

#include <cstdint>

#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention {

/// @brief Which kernel family a planned step runs.
enum class AttentionMode : std::int32_t {
  kPagedDecode,  ///< one query per row, paged_decode (no sharing)
  kRadixDecode,  ///< one query per row, the BatchPlanner's plan executed by the radix kernel
  kPrefill,      ///< a varlen batch of query rows (qo_indptr), paged_prefill
};

/// @brief The name of `mode`, for messages.
inline const char* to_string(AttentionMode mode) {
  switch (mode) {
    case AttentionMode::kPagedDecode:
      return "paged_decode";
    case AttentionMode::kRadixDecode:
      return "radix_decode";
    case AttentionMode::kPrefill:
      return "prefill";
  }
  return "unknown";
}

/**
 * @brief The model and the maxima an AttentionBatch allocates its buffers for, once.
 *
 * A step may use fewer rows, shorter contexts and fewer query rows than these; a step that
 * needs more is rejected with CapacityError before anything changes.
 */
struct AttentionBatchConfig {
  /// Heads and head_dim of the model; kv_element_bytes 0 = sizeof(T) of the AttentionBatch.
  ModelShape model{};
  std::int32_t block_size = 0;  ///< tokens per KV block, >= 1
  /// Rows (sequences) of one step, in [1, 65535] (the decode and prefill grids put rows on z).
  std::int32_t max_batch_size = 0;
  /// Block-table entries per row, >= 1: a context holds at most this * block_size tokens. Every
  /// step copies rows x max_blocks_per_seq table entries, so keep it near the longest context.
  std::int32_t max_blocks_per_seq = 0;
  /// Query rows of one prefill step (the sum of its q_lens); 0 = no prefill steps.
  std::int32_t max_q_tokens = 0;
  /// Partial states the radix-decode workspace holds; 0 = default_max_partials(). A sharing plan
  /// that needs more is replaced by the unshared plan of the same batch, which always fits the
  /// default (see AttentionStep::radix_fell_back).
  std::int64_t max_partials = 0;
  /// Pinned host staging slots, in [2, 64]: plan() may run this many steps ahead of the GPU
  /// before it waits for the oldest copy.
  std::int32_t num_slots = 2;
  /// SMs and radix-kernel CTAs per SM the planner sizes chunks for; num_sms 0 = the device's
  /// (radix_decode_device_shape<T>), filled in by the AttentionBatch constructor.
  DeviceShape device{};
  /// Cost-model and chunking parameters of the radix planner (model and device fields ignored).
  PlannerOptions tuning{};
  float scale = 0.f;   ///< softmax scale; 0 = 1 / sqrt(head_dim)
  bool causal = true;  ///< prefill mask: causal aligned to the end, or none
};

/// @brief Launch a step for more rows (and longer requests) than it has, so that its launch
/// shape equals a captured graph's (the bucket pattern: see ops/attention_batch.cuh). Padding
/// rows have context 0 and no query rows: their outputs are 0 with lse -inf.
struct PlanPadding {
  std::int32_t rows = 0;       ///< rows to launch, >= the batch's; 0 = the batch's own
  std::int32_t max_q_len = 0;  ///< prefill: longest request to size the grid for; 0 = actual
};

/// @brief Everything a step's launch shape depends on besides the AttentionBatch itself: a
/// graph captured for one LaunchShape replays correctly for any later step with an equal one.
struct LaunchShape {
  AttentionMode mode = AttentionMode::kPagedDecode;
  std::int32_t rows = 0;       ///< launched rows (batch rows + padding rows)
  std::int32_t max_q_len = 0;  ///< prefill: grid size in query rows per request; decode: 1

  friend bool operator==(const LaunchShape& a, const LaunchShape& b) {
    return a.mode == b.mode && a.rows == b.rows && a.max_q_len == b.max_q_len;
  }
  friend bool operator!=(const LaunchShape& a, const LaunchShape& b) { return !(a == b); }
};

/// @brief One planned step, as AttentionBatch::plan_decode / plan_prefill return it.
struct AttentionStep {
  LaunchShape launch{};
  std::int32_t num_seqs = 0;  ///< rows of the batch (launch.rows - padding)
  /// Query rows: prefill, the sum of q_lens (rows of q and out); decode, launch.rows.
  std::int32_t total_q = 0;
  /// Radix: the sharing plan did not fit max_partials and the unshared plan runs instead.
  bool radix_fell_back = false;
  PlanStats stats{};            ///< radix: what the planner decided
  RadixPlanSummary plan{};      ///< radix: sizes of the plan that runs (over launch.rows queries)
  std::int64_t copy_bytes = 0;  ///< bytes of the step's one host-to-device copy
};

}  // namespace radix_attention
