#pragma once
// Shared by the bounds-check tests (built with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK): a kernel
// trap leaves the CUDA context unusable, so each expected trap runs in a death-test child
// process. The threadsafe style re-executes the test binary for the child, which therefore
// starts without the parent's CUDA context and can trap without harming later tests.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "radix_attention/core/cuda_check.cuh"

namespace radix_attention::test {

/// The child's exit codes: its launch failed with the trap's CudaError
/// (cudaErrorLaunchFailure, what __trap() surfaces as; not cudaErrorIllegalAddress, a wild access),
/// with another CudaError (message on stderr), or did not fail.
inline constexpr int kTrappedExitCode = 3;
inline constexpr int kOtherCudaErrorExitCode = 4;

/// Expects `launch()` (one or more kernel launches) followed by a device synchronisation to
/// fail with the CudaError a device trap surfaces as, in a child process.
template <class Launch>
void expect_trap(Launch&& launch) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        try {
          launch();
          RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
        } catch (const CudaError& e) {
          const bool trapped = std::strstr(e.what(), "cudaErrorLaunchFailure") != nullptr;
          if (!trapped) std::fprintf(stderr, "%s\n", e.what());
          std::_Exit(trapped ? kTrappedExitCode : kOtherCudaErrorExitCode);
        }
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(kTrappedExitCode), "");
}

}  // namespace radix_attention::test
