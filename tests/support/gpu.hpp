#pragma once
// Shared by GPU tests: skip cleanly where no CUDA device is present.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

namespace radix_attention::test {

inline bool gpu_available() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device" status
    return false;
  }
  return count > 0;
}

/// Fixture base for tests that need a GPU: skipped, with a message, where there is none.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!gpu_available()) GTEST_SKIP() << "no CUDA device present; GPU test skipped";
  }
};

}  // namespace radix_attention::test

/// For TEST() bodies that do not use the GpuTest fixture.
#define RADIX_ATTENTION_REQUIRE_GPU()                             \
  do {                                                            \
    if (!::radix_attention::test::gpu_available())                \
      GTEST_SKIP() << "no CUDA device present; GPU test skipped"; \
  } while (0)
