#pragma once
/// @file
/// Launches the radix kernel (fixed grid) and its merge over a packed plan that lives in a
/// caller-owned device buffer, for AttentionBatch, whose plan sits inside one staging buffer
/// with its block tables (radix_decode takes a DeviceRadixPlan, which owns its buffer and
/// uploads with a copy of its own). The same checks as radix_decode and its launch
/// (detail::launch_radix_decode, ops/radix_decode.cuh). Not a public header.

#include <cuda_runtime_api.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/ops/merge_states.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention::detail {

/// A packed plan in device memory: its base (256-byte aligned), the offsets of its arrays
/// (fixed by its capacity) and that capacity's partial count (sizes the workspace).
struct DevicePackedPlan {
  const std::int32_t* base = nullptr;
  RadixPlanOffsets offsets{};
  std::int64_t capacity_partials = 0;
  bool prefer_tma = true;  ///< radix_plan_prefers_tma of the staged plan
};

/// radix_decode with options.fixed_grid over `plan`, whose queries are tables.num_seqs: the
/// kernel reads the work count from the plan's header, the merge produces tables.num_seqs rows,
/// so the launch shape depends on the rows and the capacity only (graph capture). The plan
/// must have been packed for this batch (group size num_q_heads / num_kv_heads, chunks inside
/// the tables' capacity): AttentionBatch's stager guarantees it.
template <class T>
void launch_packed_radix_plan(const T* q, int num_q_heads, const PagedKvCacheView<T>& cache,
                              const BlockTableView& tables, const DevicePackedPlan& plan, T* out,
                              float* lse, void* workspace, std::size_t workspace_bytes, float scale,
                              cudaStream_t stream) {
  RadixDecodeOptions options;
  options.scale = scale;
  options.fixed_grid = true;
  validate_radix_decode_args(q, num_q_heads, cache, tables, out, lse, options);
  if (tables.num_seqs == 0) return;
  expects(plan.base != nullptr, "plan.base", "nullptr", "must be a device buffer");
  const std::size_t needed =
      radix_decode_workspace_bytes(plan.capacity_partials, num_q_heads, cache.head_dim);
  expects<CapacityError>(workspace_bytes >= needed, "workspace_bytes", workspace_bytes,
                         "is smaller than the plan capacity's radix_decode_workspace_bytes");
  expects(workspace != nullptr && is_aligned16(workspace), "workspace", workspace,
          "must be a 16-byte aligned device buffer");

  launch_radix_decode(q, num_q_heads, cache, tables, radix_plan_view(plan.base, plan.offsets),
                      plan.capacity_partials, plan.base + plan.offsets.query_partial_indptr,
                      plan.base + plan.offsets.query_partials, tables.num_seqs, /*num_items=*/-1,
                      /*num_wide_items=*/-1, plan.prefer_tma, out, lse, workspace, stream, options);
}

}  // namespace radix_attention::detail
