#pragma once
/// @file
/// RadixBatch: one planned batch on the GPU — its block tables and context lengths as device
/// tensors plus the uploaded radix plan — as BatchPlanner.plan() returns it and radix_decode
/// consumes it.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAEvent.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/ops/device_radix_plan.cuh"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention_torch {

/// One device-plan buffer of a BatchPlanner's ring. Each upload bumps `generation`, which
/// invalidates the batches planned into this slot before.
struct PlanSlot {
  radix_attention::DeviceRadixPlan plan;
  std::uint64_t generation = 0;
  at::cuda::CUDAEvent uploaded;  ///< recorded on the upload stream after the copies
  c10::DeviceIndex device = -1;
  cudaStream_t stream = nullptr;  ///< stream of the last upload
};

/// The model shape a batch was planned for (radix_decode checks its inputs against it).
struct PlanShape {
  std::int32_t num_q_heads = 0;
  std::int32_t num_kv_heads = 0;
  std::int32_t head_dim = 0;
  std::int32_t block_size = 0;
};

struct RadixBatch {
  std::shared_ptr<PlanSlot> slot;
  std::uint64_t generation = 0;
  PlanShape shape;
  at::Tensor block_tables;  ///< int32 [num_queries, max_blocks_per_seq], device
  at::Tensor context_lens;  ///< int32 [num_queries], device
  std::vector<std::int32_t> host_context_lens;
  std::int32_t max_context_len = 0;
  std::vector<std::int64_t> seqs;  ///< SequenceManager ids of the rows (empty for raw tables)
  radix_attention::RadixPlan plan;
  radix_attention::PlanStats stats;

  /// True while no later plan() call reused this batch's device-plan buffer.
  bool valid() const { return slot && slot->generation == generation; }
  std::int32_t num_queries() const { return plan.num_queries; }
};

}  // namespace radix_attention_torch
