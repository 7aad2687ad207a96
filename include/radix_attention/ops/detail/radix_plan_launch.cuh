#pragma once
/// @file
/// Launches the radix kernel (fixed grid) and its merge over a packed plan that lives in a
/// caller-owned device buffer, for AttentionBatch, whose plan sits inside one staging buffer
/// with its block tables (radix_decode takes a DeviceRadixPlan, which owns its buffer and
/// uploads with a copy of its own). The same checks and kernel parameters as radix_decode
/// (ops/radix_decode.cuh), whose dispatch point and occupancy cache it uses. Not a public
/// header.

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

  const RadixKernelInfo<T> info = select_radix_kernel<T>(cache.head_dim);
  const int slots = radix_grid_slots(info, cache.head_dim);
  RadixKernelParams<T> p{};
  p.q = q;
  p.k_cache = cache.k;
  p.v_cache = cache.v;
  p.block_tables = tables.block_tables;
  p.block_table_stride = tables.row_stride;
  auto* base = static_cast<unsigned char*>(workspace);
  const auto rows = static_cast<std::size_t>(plan.capacity_partials) * num_q_heads;
  p.partial_out = reinterpret_cast<float*>(base);
  p.partial_lse = reinterpret_cast<float*>(
      base + radix_align256(rows * static_cast<std::size_t>(cache.head_dim) * sizeof(float)));
  p.plan = radix_plan_view(plan.base, plan.offsets);
  p.num_q_heads = num_q_heads;
  p.num_kv_heads = cache.num_kv_heads;
  p.group_size = num_q_heads / cache.num_kv_heads;
  p.block_size = cache.block_size;
  const float s = scale != 0.f ? scale : 1.f / std::sqrt(static_cast<float>(cache.head_dim));
  p.scale_log2 = s * 1.4426950408889634f;
  p.total_work = -1;      // fixed grid: the count comes from the plan's header
  discard_stale_error();  // the launch rule of core/cuda_check.cuh
  info.kernel<<<static_cast<unsigned>(slots), info.threads, info.smem_bytes, stream>>>(p);
  RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
  merge_states<T>(p.partial_out, p.partial_lse, static_cast<int>(plan.capacity_partials),
                  num_q_heads, cache.head_dim, plan.base + plan.offsets.query_partial_indptr,
                  plan.base + plan.offsets.query_partials, tables.num_seqs, out, lse, stream);
}

}  // namespace radix_attention::detail
