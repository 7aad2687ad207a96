// RADIX_ATTENTION_CUDA_CHECK formats a failure (runs anywhere); with a GPU: a caught failure is
// not reported again by the next check, a launch check reports the launch itself and not an
// older, unchecked failure, and the launchers follow that launch rule.

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/ops/paged_decode.cuh"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;

// More than any device holds: a clean, non-sticky cudaErrorMemoryAllocation.
constexpr std::size_t kImpossibleBytes = std::size_t{1} << 60;

__global__ void write_one(int* out) { *out = 1; }

// Leaves a failure in the runtime's last-error slot, as an application that ignores a status
// does.
void leave_unchecked_failure() {
  void* p = nullptr;
  (void)cudaMalloc(&p, kImpossibleBytes);
  ASSERT_NE(cudaPeekAtLastError(), cudaSuccess) << "the runtime did not record the failure";
}

// Needs no device: the check only formats a status it is given.
TEST(CudaCheck, SuccessDoesNotThrow) { EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK(cudaSuccess)); }

TEST(CudaCheck, FailureCarriesFileLineAndErrorName) {
  try {
    RADIX_ATTENTION_CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "no exception";
  } catch (const CudaError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cuda_check_test.cu:"), std::string::npos) << what;
    EXPECT_NE(what.find("cudaErrorInvalidValue"), std::string::npos) << what;
    EXPECT_NE(what.find("cudaErrorInvalidValue failed"), std::string::npos) << what;
  }
}

TEST(CudaCheck, CaughtFailureIsNotReportedAgain) {
  RADIX_ATTENTION_REQUIRE_GPU();
  void* p = nullptr;
  EXPECT_THROW(RADIX_ATTENTION_CUDA_CHECK(cudaMalloc(&p, kImpossibleBytes)), CudaError);
  EXPECT_EQ(cudaPeekAtLastError(), cudaSuccess);

  // Without the reset, this good launch's check would report the cudaMalloc above.
  DeviceBuffer<int> out(1);
  write_one<<<1, 1>>>(out.data());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK_LAUNCH());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize()));
}

TEST(CudaCheckLaunch, ReportsTheFailedLaunchOnce) {
  RADIX_ATTENTION_REQUIRE_GPU();
  DeviceBuffer<int> out(1);
  detail::discard_stale_error();
  write_one<<<1, 4096>>>(out.data());  // over 1024 threads per block: a configuration error
  try {
    RADIX_ATTENTION_CUDA_CHECK_LAUNCH();
    FAIL() << "no exception";
  } catch (const CudaError& e) {
    // The runtime names the error InvalidConfiguration or (CUDA 13) InvalidValue; either way
    // the message carries the failed check and an error name.
    const std::string what = e.what();
    EXPECT_NE(what.find("cudaGetLastError() failed: cudaError"), std::string::npos) << what;
    EXPECT_TRUE(what.find("cudaErrorInvalidConfiguration") != std::string::npos ||
                what.find("cudaErrorInvalidValue") != std::string::npos)
        << what;
  }
  detail::discard_stale_error();
  write_one<<<1, 1>>>(out.data());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK_LAUNCH());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize()));
  EXPECT_EQ(out.download(), std::vector<int>{1});
}

TEST(CudaCheckLaunch, StaleFailureIsNotBlamedOnAGoodLaunch) {
  RADIX_ATTENTION_REQUIRE_GPU();
  DeviceBuffer<int> out(1);
  leave_unchecked_failure();
  detail::discard_stale_error();
  write_one<<<1, 1>>>(out.data());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK_LAUNCH());
  EXPECT_NO_THROW(RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize()));
}

// The launchers follow the rule: an application's unchecked failure before paged_decode does
// not make paged_decode throw.
TEST(CudaCheckLaunch, LauncherIgnoresAnOlderUncheckedFailure) {
  RADIX_ATTENTION_REQUIRE_GPU();
  constexpr int kHeadDim = 64, kBlockSize = 16, kContext = 5;
  DeviceBuffer<float> q(std::vector<float>(kHeadDim, 0.5f));
  DeviceBuffer<float> kv(std::vector<float>(kBlockSize * kHeadDim, 0.25f));
  DeviceBuffer<float> out(kHeadDim);
  DeviceBuffer<std::int32_t> table(std::vector<std::int32_t>{0});
  DeviceBuffer<std::int32_t> lens(std::vector<std::int32_t>{kContext});
  const PagedKvCacheView<float> cache{kv.data(), kv.data(), 1, kBlockSize, 1, kHeadDim};
  const BlockTableView tables{table.data(), lens.data(), 1, 1, 1, kContext};
  PagedDecodeOptions options;
  options.num_splits = 1;  // no workspace needed
  leave_unchecked_failure();
  EXPECT_NO_THROW(
      paged_decode(q.data(), 1, cache, tables, out.data(), nullptr, nullptr, 0, nullptr, options));
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  // Every key equals every other, so the output is the (equal) value rows: 0.25 everywhere.
  for (float x : out.download()) EXPECT_FLOAT_EQ(x, 0.25f);
}

}  // namespace
}  // namespace radix_attention
