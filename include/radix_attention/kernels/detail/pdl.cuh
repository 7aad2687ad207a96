#pragma once
/// @file
/// Programmatic dependent launch (sm_90+) from the device side. A producer kernel calls
/// allow_dependent_launch() once every CTA of its grid is resident, so the consumer grid
/// (launched with cudaLaunchAttributeProgrammaticStreamSerialization) is scheduled onto the
/// SMs the producer leaves free instead of after the producer's last CTA exits; the consumer
/// calls wait_for_producer() before it reads anything the producer writes. Both compile to
/// nothing below sm_90, and are no-ops when the launch was not a dependent one.

namespace radix_attention::detail {

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_producer() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

}  // namespace radix_attention::detail
