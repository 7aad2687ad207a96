#pragma once
/// @file
/// Which code the loaded device image holds: a build for "80;90" runs on an H100 / H200 from
/// its sm_90 image, which has no wgmma; a build for "80;90a" loads the sm_90a image there. The
/// launchers ask this before selecting a wgmma kernel, so every build runs correctly, the
/// Hopper path only where it was compiled.

#include <cuda_runtime_api.h>

#include <array>
#include <atomic>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/device_query.cuh"
#include "radix_attention/kernels/detail/wgmma.cuh"

namespace radix_attention::detail {

/// 1 in an image compiled with wgmma (sm_90a), 0 in any other. Internal linkage: every
/// translation unit asks about its own module.
static __device__ int g_image_has_wgmma = RADIX_ATTENTION_HAS_WGMMA;

/// True when this translation unit's kernels run from an sm_90a image on `device`. The first
/// call per device reads one int from the device (synchronously); later calls are cached.
static inline bool image_has_wgmma(int device) {
  static std::array<std::atomic<int>, kMaxCachedDevices> cache{};  // 0 unknown, 1 no, 2 yes
  if (device >= 0 && device < kMaxCachedDevices) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known != 0) return known == 2;
  }
  int value = 0;
  RADIX_ATTENTION_CUDA_CHECK(cudaMemcpyFromSymbol(&value, g_image_has_wgmma, sizeof(int)));
  if (device >= 0 && device < kMaxCachedDevices) {
    cache[device].store(value != 0 ? 2 : 1, std::memory_order_relaxed);
  }
  return value != 0;
}

}  // namespace radix_attention::detail
