#pragma once
/// @file
/// The one status-check helper every CUDA runtime call in the library goes through, and the
/// rule for checking kernel launches.
///
/// The runtime keeps a per-thread "last error": every failed runtime call stores its status
/// there, and `cudaGetLastError()` returns and resets it (`cudaPeekAtLastError()` only returns
/// it). A `<<<...>>>` launch reports its configuration errors only through that slot, so two
/// things must hold for a launch check to blame the right call:
///
///  1. A failure the library reports as an exception is also removed from the slot
///     (cuda_check() resets it before throwing): a caller that catches the CudaError and carries
///     on must not see the same error again from the next, good launch.
///  2. **Launch rule**: a launcher calls detail::discard_stale_error() immediately before each
///     `<<<...>>>` launch and RADIX_ATTENTION_CUDA_CHECK_LAUNCH() immediately after it, with no
///     runtime call in between, so that the check reports that launch and nothing older (an
///     error an application left unchecked is not the library's launch failing).
///     Launches through `cudaLaunchKernelEx` return their own status and need only
///     RADIX_ATTENTION_CUDA_CHECK.
///
/// Sticky errors (an illegal address, a device-side trap) corrupt the context: the runtime
/// keeps returning them from every call whatever is reset, which is the right outcome — the
/// process must recreate its context, and every later check says so.

#include <cuda_runtime_api.h>

#include "radix_attention/core/arch.cuh"
#include "radix_attention/core/error.hpp"

namespace radix_attention::detail {

/// @brief Throws CudaError "<file>:<line>: <expr> failed: <cudaErrorName> (<text>)" on failure,
/// after resetting the runtime's last error (rule 1 above).
inline void cuda_check(cudaError_t status, const char* expr, const char* file, int line) {
  if (status != cudaSuccess) {
    // The failed call also left `status` in the last-error slot; the exception now carries it.
    (void)cudaGetLastError();
    throw CudaError(concat(file, ":", line, ": ", expr, " failed: ", cudaGetErrorName(status), " (",
                           cudaGetErrorString(status), ")"));
  }
}

/// @brief Drops a non-sticky error an earlier, unrelated call left in the last-error slot, so
/// that the launch check that follows reports only the launch in between (rule 2 above).
/// The error belonged to whoever ignored it; discarding it here never hides a launch failure.
inline void discard_stale_error() noexcept { (void)cudaGetLastError(); }

}  // namespace radix_attention::detail

/// Checks a cudaError_t-returning expression; throws radix_attention::CudaError on failure.
#define RADIX_ATTENTION_CUDA_CHECK(expr) \
  ::radix_attention::detail::cuda_check((expr), #expr, __FILE__, __LINE__)

/// Checks the `<<<...>>>` launch just enqueued: its configuration errors (too many threads, too
/// much shared memory, no kernel image for this device) surface here, not at the next
/// synchronisation. Reads and resets the last error, so a failed launch is reported once.
/// Precondition (the launch rule above): detail::discard_stale_error() right before the launch.
#define RADIX_ATTENTION_CUDA_CHECK_LAUNCH() RADIX_ATTENTION_CUDA_CHECK(cudaGetLastError())
