#pragma once
// Shared by GPU tests and benchmarks: an owning device buffer (RAII), host <-> device copies,
// poisoning, and random host data. Every CUDA call is checked (throws CudaError).

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "radix_attention/core/cuda_check.cuh"

namespace radix_attention::test {

/// Owning device array of `size` elements of T (uninitialised until written or poisoned).
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t size) : size_(size) {
    if (size_ > 0) RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&data_, size_ * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { swap(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    DeviceBuffer tmp(std::move(other));
    swap(tmp);
    return *this;
  }
  ~DeviceBuffer() {
    if (data_ != nullptr) (void)cudaFree(data_);
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::size_t bytes() const { return size_ * sizeof(T); }

  void upload(const std::vector<T>& host) {
    if (host.size() != size_) *this = DeviceBuffer(host.size());
    if (size_ > 0) {
      RADIX_ATTENTION_CUDA_CHECK(cudaMemcpy(data_, host.data(), bytes(), cudaMemcpyHostToDevice));
    }
  }
  std::vector<T> download() const {
    std::vector<T> host(size_);
    if (size_ > 0) {
      RADIX_ATTENTION_CUDA_CHECK(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost));
    }
    return host;
  }
  /// Fills every byte with `byte`; 0xFF makes every float, __half and __nv_bfloat16 a NaN, so
  /// an element a kernel forgot to write is caught by a finiteness check.
  void poison(unsigned char byte = 0xFF) {
    if (size_ > 0) RADIX_ATTENTION_CUDA_CHECK(cudaMemset(data_, byte, bytes()));
  }

 private:
  void swap(DeviceBuffer& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
  }
  T* data_ = nullptr;
  std::size_t size_ = 0;
};

/// `n` values drawn uniformly from [lo, hi), converted to T (T must be constructible from float).
template <class T>
std::vector<T> random_vector(std::size_t n, std::mt19937_64& rng, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<T> out;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<T>(dist(rng)));
  return out;
}

}  // namespace radix_attention::test
