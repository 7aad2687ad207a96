#pragma once
/// @file
/// The device queries the launchers share: the current device and its SM count (cached per
/// device: the launchers ask on every call, the answer never changes).

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>

#include "radix_attention/core/cuda_check.cuh"

namespace radix_attention::detail {

/// Devices whose properties are cached; a larger ordinal is queried every time.
inline constexpr int kMaxCachedDevices = 64;

inline int current_device() {
  int device = 0;
  RADIX_ATTENTION_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

inline int device_sm_count(int device) {
  static std::array<std::atomic<int>, kMaxCachedDevices> cache{};
  if (device < kMaxCachedDevices && cache[device].load(std::memory_order_relaxed) > 0) {
    return cache[device].load(std::memory_order_relaxed);
  }
  int count = 0;
  RADIX_ATTENTION_CUDA_CHECK(
      cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  if (device < kMaxCachedDevices) cache[device].store(count, std::memory_order_relaxed);
  return count;
}

}  // namespace radix_attention::detail
