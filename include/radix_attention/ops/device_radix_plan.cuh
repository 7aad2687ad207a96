#pragma once
/// @file
/// DeviceRadixPlan: a RadixPlan resident on the GPU (packed; see plan/radix_plan_layout.hpp),
/// the plan argument of radix_decode (ops/radix_decode.cuh).

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/error.hpp"
#include "radix_attention/plan/radix_plan.hpp"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention {

/**
 * @brief Owns a pinned host staging buffer and a device buffer holding one packed RadixPlan.
 *
 * `upload` validates a plan against its batch, packs it (plan arrays + the radix kernel's work
 * list) into ONE int32 buffer and copies it with ONE cudaMemcpyAsync on the caller's stream.
 * Buffers are allocated only when a plan does not fit the current capacity (growing by half
 * again); steady-state uploads allocate nothing on the GPU side. Array offsets depend on the
 * capacity only, so device addresses stay fixed while plans fit: reserve() the largest plan
 * up front and a radix_decode launch captured in a CUDA graph (fixed grid) stays valid across
 * uploads.
 *
 * Uploads are stream-ordered: a radix_decode launched later on the same stream sees the new
 * plan; the host staging buffer is reused only after the previous copy from it completed.
 * Not thread-safe; move-only.
 */
class DeviceRadixPlan {
 public:
  DeviceRadixPlan() = default;
  DeviceRadixPlan(const DeviceRadixPlan&) = delete;
  DeviceRadixPlan& operator=(const DeviceRadixPlan&) = delete;
  DeviceRadixPlan(DeviceRadixPlan&& other) noexcept { swap(other); }
  DeviceRadixPlan& operator=(DeviceRadixPlan&& other) noexcept {
    DeviceRadixPlan tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  ~DeviceRadixPlan() { release(); }

  /**
   * @brief Allocates buffers for plans up to `capacity` (no-op if they already fit).
   * @throw CudaError if an allocation fails (the plan is unchanged then).
   */
  void reserve(const RadixPlanCapacity& capacity) {
    if (capacity_.holds(capacity) && host_ != nullptr) return;
    RadixPlanCapacity grown{std::max(capacity.chunks, capacity_.chunks),
                            std::max(capacity.partials, capacity_.partials),
                            std::max(capacity.queries, capacity_.queries),
                            std::max(capacity.items, capacity_.items)};
    reallocate(grown, detail::radix_plan_offsets(grown).total);
  }

  /**
   * @brief Validates `plan` for the batch and uploads it (one cudaMemcpyAsync on `stream`).
   * @param plan the batch's plan (see RadixPlan); its batch_fingerprint is recorded.
   * @param context_lens the batch's context lengths (host), one per query.
   * @param group_size query heads per KV head of the model (num_q_heads / num_kv_heads): the
   *        kernel's work list tiles each chunk's queries x group rows.
   * @param stream stream of the copy (use the stream radix_decode runs on).
   * @throw InvalidArgument if the plan does not match the batch (validate_radix_plan) or
   *        group_size < 1; CudaError if a CUDA call fails. On a throw the previously uploaded
   *        plan stays in place.
   */
  void upload(const RadixPlan& plan, const std::vector<std::int32_t>& context_lens, int group_size,
              cudaStream_t stream) {
    RadixPlanCapacity cap = capacity_;
    const RadixPlanSummary summary =
        detail::pack_radix_plan(plan, context_lens, group_size, cap, staging_);
    if (!capacity_.holds(cap) || host_ == nullptr) {
      reallocate(cap, static_cast<std::int64_t>(staging_.size()));
    }
    // The staging buffer may still feed the previous upload's copy.
    if (copied_ != nullptr) RADIX_ATTENTION_CUDA_CHECK(cudaEventSynchronize(copied_));
    const std::size_t bytes = staging_.size() * sizeof(std::int32_t);
    std::memcpy(host_, staging_.data(), bytes);
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMemcpyAsync(device_, host_, bytes, cudaMemcpyHostToDevice, stream));
    if (copied_ == nullptr) {
      RADIX_ATTENTION_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
    }
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(copied_, stream));
    summary_ = summary;
    uploaded_ = true;
  }

  /// @brief True once a plan has been uploaded.
  bool uploaded() const { return uploaded_; }
  /// @brief Sizes and fingerprint of the uploaded plan.
  const RadixPlanSummary& summary() const { return summary_; }
  std::int32_t num_queries() const { return summary_.num_queries; }
  std::int32_t num_partials() const { return summary_.num_partials; }
  std::int32_t group_size() const { return summary_.group_size; }
  /// @brief The batch_fingerprint of the uploaded plan (compare with the current batch's).
  std::uint64_t batch_fingerprint() const { return summary_.batch_fingerprint; }
  /// @brief Capacity the buffers hold (partials sizes the radix_decode workspace).
  const RadixPlanCapacity& capacity() const { return capacity_; }

  /// @brief Device view of the packed arrays (for the kernel).
  RadixPlanView view() const { return detail::radix_plan_view(device_, offsets_); }
  /// @brief Device int32 [num_queries + 1]: CSR of each query's partials (for merge_states).
  const std::int32_t* query_partial_indptr() const {
    return device_ + offsets_.query_partial_indptr;
  }
  /// @brief Device int32 [num_partials]: partial ids per query (for merge_states).
  const std::int32_t* query_partials() const { return device_ + offsets_.query_partials; }

 private:
  void reallocate(const RadixPlanCapacity& cap, std::int64_t words) {
    const std::size_t bytes = static_cast<std::size_t>(words) * sizeof(std::int32_t);
    std::int32_t* host = nullptr;
    std::int32_t* device = nullptr;
    RADIX_ATTENTION_CUDA_CHECK(cudaMallocHost(&host, bytes));
    const cudaError_t status = cudaMalloc(&device, bytes);
    if (status != cudaSuccess) {
      (void)cudaFreeHost(host);
      RADIX_ATTENTION_CUDA_CHECK(status);
    }
    release();  // waits for the old copy; the old device buffer's readers are stream-ordered
    host_ = host;
    device_ = device;
    capacity_ = cap;
    offsets_ = detail::radix_plan_offsets(cap);
  }

  void release() noexcept {
    if (copied_ != nullptr) {
      (void)cudaEventSynchronize(copied_);
      (void)cudaEventDestroy(copied_);
      copied_ = nullptr;
    }
    // cudaFree waits for work that may still read the buffer.
    if (device_ != nullptr) (void)cudaFree(device_);
    if (host_ != nullptr) (void)cudaFreeHost(host_);
    host_ = nullptr;
    device_ = nullptr;
    uploaded_ = false;
  }

  void swap(DeviceRadixPlan& other) noexcept {
    std::swap(host_, other.host_);
    std::swap(device_, other.device_);
    std::swap(copied_, other.copied_);
    std::swap(capacity_, other.capacity_);
    std::swap(offsets_, other.offsets_);
    std::swap(summary_, other.summary_);
    std::swap(uploaded_, other.uploaded_);
    staging_.swap(other.staging_);
  }

  std::int32_t* host_ = nullptr;
  std::int32_t* device_ = nullptr;
  cudaEvent_t copied_ = nullptr;
  RadixPlanCapacity capacity_{};
  detail::RadixPlanOffsets offsets_{};
  RadixPlanSummary summary_{};
  bool uploaded_ = false;
  std::vector<std::int32_t> staging_;
};

}  // namespace radix_attention
