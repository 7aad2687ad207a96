#include "radix_attention/core/cuda_check.cuh"

#include <gtest/gtest.h>

#include <string>

namespace radix_attention {
namespace {

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

}  // namespace
}  // namespace radix_attention
