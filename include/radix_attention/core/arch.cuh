#pragma once
/// @file
/// The oldest GPU architecture the kernels support, enforced at compile time: a device
/// compilation for an older one stops here with one readable error instead of failing later in
/// ptxas. Included by core/cuda_check.cuh, which every launcher includes.

/// sm_80 (Ampere): bf16 mma.sync, cp.async and ldmatrix, which the kernels are built on.
#define RADIX_ATTENTION_MIN_CUDA_ARCH 800

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < RADIX_ATTENTION_MIN_CUDA_ARCH
#error "radix_attention kernels need sm_80 or newer: build for e.g. CMAKE_CUDA_ARCHITECTURES=80;90a"
#endif
