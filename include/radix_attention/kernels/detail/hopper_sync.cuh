#pragma once
/// @file
/// Synchronisation pieces of the warp-specialised Hopper kernels (sm_90a): mbarriers (through
/// CCCL's cuda::ptx), register reallocation between producer and consumer warpgroups
/// (`setmaxnreg`), and named barriers that order the consumer warpgroups' tensor-core turns.
/// Only used inside RADIX_ATTENTION_HAS_TMA_KERNELS regions.

#include <cuda_runtime_api.h>

#include <cstdint>

#include "radix_attention/kernels/detail/wgmma.cuh"

/// 1 where the toolkit has what the TMA-fed kernels use: CCCL's cuda::ptx TMA and mbarrier
/// wrappers and the runtime's versioned driver entry point (CUDA 12.5 and newer). Older
/// toolkits compile those kernels to a trap and the launchers keep the cp.async kernels.
#ifndef RADIX_ATTENTION_HAS_TMA_LOADER
#if CUDART_VERSION >= 12050
#define RADIX_ATTENTION_HAS_TMA_LOADER 1
#else
#define RADIX_ATTENTION_HAS_TMA_LOADER 0
#endif
#endif

#if RADIX_ATTENTION_HAS_TMA_LOADER
#include <cuda/ptx>
#endif

/// Device code of the warp-specialised TMA kernels: an sm_90a pass with the wrappers present.
#define RADIX_ATTENTION_HAS_TMA_KERNELS \
  (RADIX_ATTENTION_HAS_WGMMA && RADIX_ATTENTION_HAS_TMA_LOADER)

namespace radix_attention::detail {

#if RADIX_ATTENTION_HAS_TMA_KERNELS

/// Spins until the mbarrier's phase with parity `parity` has completed. try_wait suspends the
/// thread for a while inside the instruction, so waiting warps take few issue slots.
__device__ __forceinline__ void mbarrier_wait(std::uint64_t* bar, unsigned parity) {
  while (!cuda::ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}

/// One plain arrival (release, CTA scope).
__device__ __forceinline__ void mbarrier_arrive(std::uint64_t* bar) {
  (void)cuda::ptx::mbarrier_arrive(bar);
}

/// One arrival that also announces `bytes` of bulk-copy transactions the phase waits for.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
  (void)cuda::ptx::mbarrier_arrive_expect_tx(cuda::ptx::sem_release, cuda::ptx::scope_cta,
                                             cuda::ptx::space_shared, bar, bytes);
}

/// Gives this warpgroup's registers back (producer) or takes them (consumers); the counts must
/// balance over the CTA (see the kernel's traits).
template <int REGS>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGS));
}
template <int REGS>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGS));
}

/// Named barrier `id` (1..15; 0 is __syncthreads) over `threads` threads: wait / arrive only.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

#endif  // RADIX_ATTENTION_HAS_TMA_KERNELS

/**
 * The mbarriers of a warp-specialised pipeline, `kCount` consecutive 8-byte words of shared
 * memory: per query slot a full barrier (the slot's copies landed) and an empty one (its
 * consumer is done with it), per K/V stage a full and an empty barrier for K and for V. The
 * kernels' shared-memory layouts derive from it and point `bars` at their barrier words.
 */
template <int Q_SLOTS, int STAGES>
struct TmaPipelineBarriers {
  static constexpr int kCount = 2 * Q_SLOTS + 4 * STAGES;
  std::uint64_t* bars = nullptr;

  __device__ std::uint64_t* q_full(int slot) const { return bars + slot; }
  __device__ std::uint64_t* q_empty(int slot) const { return bars + Q_SLOTS + slot; }
  __device__ std::uint64_t* k_full(int s) const { return bars + 2 * Q_SLOTS + s; }
  __device__ std::uint64_t* v_full(int s) const { return bars + 2 * Q_SLOTS + STAGES + s; }
  __device__ std::uint64_t* k_empty(int s) const { return bars + 2 * Q_SLOTS + 2 * STAGES + s; }
  __device__ std::uint64_t* v_empty(int s) const { return bars + 2 * Q_SLOTS + 3 * STAGES + s; }

#if RADIX_ATTENTION_HAS_TMA_KERNELS
  /// One thread, before anyone uses them: the arrival counts that complete each barrier's phase.
  __device__ void init(int q_full_arrivals, int q_empty_arrivals, int kv_full_arrivals,
                       int kv_empty_arrivals) const {
    for (int b = 0; b < Q_SLOTS; ++b) {
      cuda::ptx::mbarrier_init(q_full(b), q_full_arrivals);
      cuda::ptx::mbarrier_init(q_empty(b), q_empty_arrivals);
    }
    for (int s = 0; s < STAGES; ++s) {
      cuda::ptx::mbarrier_init(k_full(s), kv_full_arrivals);
      cuda::ptx::mbarrier_init(v_full(s), kv_full_arrivals);
      cuda::ptx::mbarrier_init(k_empty(s), kv_empty_arrivals);
      cuda::ptx::mbarrier_init(v_empty(s), kv_empty_arrivals);
    }
  }
#endif
};

}  // namespace radix_attention::detail
