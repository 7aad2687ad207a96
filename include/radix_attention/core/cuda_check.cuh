#pragma once
/// @file
/// The one status-check helper every CUDA runtime call in the library goes through.

#include <cuda_runtime_api.h>

#include "radix_attention/core/error.hpp"

namespace radix_attention::detail {

/// @brief Throws CudaError "<file>:<line>: <expr> failed: <cudaErrorName> (<text>)" on failure.
inline void cuda_check(cudaError_t status, const char* expr, const char* file, int line) {
  if (status != cudaSuccess) {
    throw CudaError(concat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(status), " (",
                           cudaGetErrorString(status), ")"));
  }
}

}  // namespace radix_attention::detail

/// Checks a cudaError_t-returning expression; throws radix_attention::CudaError on failure.
#define RADIX_ATTENTION_CUDA_CHECK(expr) \
  ::radix_attention::detail::cuda_check((expr), #expr, __FILE__, __LINE__)

/// Checks the launch that was just enqueued (configuration errors surface here, not later).
#define RADIX_ATTENTION_CUDA_CHECK_LAUNCH() RADIX_ATTENTION_CUDA_CHECK(cudaGetLastError())
