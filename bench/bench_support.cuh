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

/// Element i's hash of `seed` as a float in [0, 2^32): the fill kernels scale it to their range.
__device__ __forceinline__ float hashed_value(std::size_t i, std::uint32_t seed) {
  std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
  h ^= h >> 15, h *= 2246822519u, h ^= h >> 13, h *= 3266489917u, h ^= h >> 16;
  return static_cast<float>(h);
}

// Random (hash-based) values in [-1, 1): benchmarks never run on zeros.
__global__ void fill_random(__nv_bfloat16* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    data[i] = __float2bfloat16(hashed_value(i, seed) * (2.f / 4294967296.f) - 1.f);
  }
}

/// Uniform values in [-1, 1), as the bf16 overload (float caches and queries).
__global__ void fill_random(float* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    data[i] = hashed_value(i, seed) * (2.f / 4294967296.f) - 1.f;
  }
}

/// Random e4m3 codes of values in [-448, 448) (every finite code likely; stored values as
/// kv_append writes them with scale = max|x| / 448).
__global__ void fill_random(__nv_fp8_e4m3* data, std::size_t n, std::uint32_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    data[i] = __nv_fp8_e4m3(hashed_value(i, seed) * (896.f / 4294967296.f) - 448.f);
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

/// A CUDA graph captured from the work `record(stream)` enqueues on a capturing stream of its
/// own, instantiated once and replayable on any stream. How an engine runs a decode step: the
/// launches are captured once, and each step is one cudaGraphLaunch of them all.
class CapturedGraph {
 public:
  template <class Record>
  explicit CapturedGraph(Record&& record) {
    cudaStream_t stream = nullptr;
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    try {
      record(stream);
    } catch (...) {
      end_capture(stream);  // a throwing launch must not leave the stream capturing
      if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
      throw;
    }
    RADIX_ATTENTION_CUDA_CHECK(end_capture(stream));
    const cudaError_t instantiated = cudaGraphInstantiate(&exec_, graph_, 0);
    if (instantiated != cudaSuccess) (void)cudaGraphDestroy(graph_);
    RADIX_ATTENTION_CUDA_CHECK(instantiated);
  }
  ~CapturedGraph() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
  }
  CapturedGraph(const CapturedGraph&) = delete;
  CapturedGraph& operator=(const CapturedGraph&) = delete;

  /// One replay on `stream` (the default stream: where EventTimer records).
  void launch(cudaStream_t stream = nullptr) const {
    RADIX_ATTENTION_CUDA_CHECK(cudaGraphLaunch(exec_, stream));
  }

 private:
  cudaError_t end_capture(cudaStream_t stream) {
    const cudaError_t status = cudaStreamEndCapture(stream, &graph_);
    (void)cudaStreamDestroy(stream);
    return status;
  }

  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// The Google Benchmark loop over graph replays: `warmups` untimed replays, then one
/// event-timed replay per iteration, each replay running `launches` captured launches back to
/// back. Reports per launch: manual time and counters["median_us"] are the replay's time /
/// `launches` (median over the iterations), counters["graph_us"] the median replay. Returns
/// the per-launch median in microseconds. The one cudaGraphLaunch per replay is inside the
/// timed interval; divided by `launches` it is a small share of each figure.
inline double timed_graph_median_us(benchmark::State& state, int warmups,
                                    const CapturedGraph& graph, int launches) {
  EventTimer timer;
  for (int i = 0; i < warmups; ++i) timer.time_us([&] { graph.launch(); });
  std::vector<double> samples;
  for (auto _ : state) {
    const double us = timer.time_us([&] { graph.launch(); });
    samples.push_back(us);
    state.SetIterationTime(us / launches * 1e-6);
  }
  const double med = median(samples);
  state.counters["graph_us"] = med;
  state.counters["median_us"] = med / launches;
  return med / launches;
}

/// Reads `n` uint4 once each and folds them, so the loads cannot be elided: the read-only
/// stream ceiling that decode floors are computed from.
__global__ void read_stream_kernel(const uint4* data, std::size_t n, unsigned* sink) {
  unsigned acc = 0;
  const std::size_t stride = std::size_t(gridDim.x) * blockDim.x;
  std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {  // 4 independent 16-byte loads in flight
    const uint4 a = data[i], b = data[i + stride], c = data[i + 2 * stride],
                d = data[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^
           d.w;
  }
  for (; i < n; i += stride) acc ^= data[i].x ^ data[i].y ^ data[i].z ^ data[i].w;
  if (acc == 0x12345678u) *sink = acc;  // practically never taken; keeps `acc` live
}

/// The device's read-only HBM bandwidth in GB/s, measured once per process (1 GiB, 8 CTAs of
/// 256 threads per SM, median of 21 runs after 3 warm-ups): unique-bytes floors are this
/// run's bytes / this, so no figure of another GPU enters a benchmark's output.
inline double measured_read_ceiling_gbps() {
  static const double gbps = [] {
    constexpr std::size_t kBytes = std::size_t{1} << 30;
    DeviceArray<unsigned char> src(kBytes);
    DeviceArray<unsigned> sink(1);
    RADIX_ATTENTION_CUDA_CHECK(cudaMemset(src.ptr, 1, kBytes));
    int device = 0, sms = 0;
    RADIX_ATTENTION_CUDA_CHECK(cudaGetDevice(&device));
    RADIX_ATTENTION_CUDA_CHECK(
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    EventTimer timer;
    std::vector<double> us;
    for (int i = 0; i < 24; ++i) {
      const double t = timer.time_us([&] {
        read_stream_kernel<<<sms * 8, 256>>>(reinterpret_cast<const uint4*>(src.ptr), kBytes / 16,
                                             sink.ptr);
        RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
      });
      if (i >= 3) us.push_back(t);
    }
    return double(kBytes) / (median(us) * 1e-6) / 1e9;
  }();
  return gbps;
}

}  // namespace bench
