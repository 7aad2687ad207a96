#pragma once
// What the GPU benchmarks share: an owning device array, random bf16 / fp8 e4m3 fill, and
// CUDA-event timing with a median. Benchmark code, not part of the library.

#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "radix_attention/core/cuda_check.cuh"

namespace bench {

/// Owning device allocation of n elements (at least one, so the pointer is never null).
template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(std::size_t n) {
    RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&ptr, std::max<std::size_t>(n, 1) * sizeof(T)));
  }
  /// A copy of `host` on the device.
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    RADIX_ATTENTION_CUDA_CHECK(
        cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { (void)cudaFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
};

// Random (hash-based) values in [-1, 1): benchmarks never run on zeros.
__global__ void fill_random(__nv_bfloat16* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    data[i] = __float2bfloat16(static_cast<float>(h) * (2.f / 4294967296.f) - 1.f);
  }
}

/// Random e4m3 codes of values in [-448, 448) (every finite code likely; stored values as
/// kv_append writes them with scale = max|x| / 448).
__global__ void fill_random(__nv_fp8_e4m3* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
    h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
    data[i] = __nv_fp8_e4m3(static_cast<float>(h) * (896.f / 4294967296.f) - 448.f);
  }
}

/// Times one launch (or launch sequence) on the default stream between two CUDA events.
class EventTimer {
 public:
  EventTimer() {
    RADIX_ATTENTION_CUDA_CHECK(cudaEventCreate(&start_));
    RADIX_ATTENTION_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    (void)cudaEventDestroy(start_);
    (void)cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  template <class F>
  double time_us(F&& launch) {
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(start_));
    launch();
    RADIX_ATTENTION_CUDA_CHECK(cudaEventRecord(stop_));
    RADIX_ATTENTION_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.f;
    RADIX_ATTENTION_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e3;
  }

 private:
  cudaEvent_t start_{}, stop_{};
};

/// The median of `samples` (the upper one of an even count); reorders them.
inline double median(std::vector<double>& samples) {
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  return samples[samples.size() / 2];
}

/// The Google Benchmark loop: `warmups` untimed runs, then one event-timed run per iteration,
/// reported as manual time. `before` runs ahead of every run, outside the timed interval (an L2
/// flush, or nothing). Sets counters["median_us"] and returns the median in microseconds.
template <class Before, class F>
double timed_median_us(benchmark::State& state, int warmups, Before&& before, F&& launch) {
  EventTimer timer;
  auto once = [&] {
    before();
    return timer.time_us(launch);
  };
  for (int i = 0; i < warmups; ++i) once();
  std::vector<double> samples;
  for (auto _ : state) {
    const double us = once();
    samples.push_back(us);
    state.SetIterationTime(us * 1e-6);
  }
  const double med = median(samples);
  state.counters["median_us"] = med;
  return med;
}

/// timed_median_us with nothing to do between runs.
template <class F>
double timed_median_us(benchmark::State& state, int warmups, F&& launch) {
  return timed_median_us(
      state, warmups, [] {}, launch);
}

}  // namespace bench
