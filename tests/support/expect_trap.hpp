#pragma once
// Shared by the bounds-check tests (built with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK): a kernel
// trap leaves the CUDA context unusable, so each expected trap runs in a death-test child
// process. The threadsafe style re-executes the test binary for the child, which therefore
// starts without the parent's CUDA context and can trap without harming later tests.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>

#include "radix_attention/core/cuda_check.cuh"

namespace radix_attention::test {

/// The child's exit code when its launch failed with CudaError (0 when it did not fail).
inline constexpr int kTrappedExitCode = 3;

/// Expects `launch()` (one or more kernel launches) followed by a device synchronisation to
/// fail with CudaError, the surfaced trap, in a child process.
template <class Launch>
void expect_trap(Launch&& launch) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        try {
          launch();
          RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
        } catch (const CudaError&) {
          std::_Exit(kTrappedExitCode);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kTrappedExitCode), "");
}

}  // namespace radix_attention::test
