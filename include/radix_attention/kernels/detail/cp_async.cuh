#pragma once
/// @file
/// Asynchronous global->shared 16-byte copies (sm_80+ `cp.async`), the loads of the
/// multi-stage KV pipelines. Each copy bypasses L1 (`.cg`): KV is streamed once.

#include <cstdint>

/// L2 prefetch size hint of the KV copies (0 = none, 128 or 256 bytes).
#ifndef RADIX_ATTENTION_CP_ASYNC_L2_PREFETCH
#define RADIX_ATTENTION_CP_ASYNC_L2_PREFETCH 0
#endif

namespace radix_attention::detail {

/// Shared-memory address as the 32-bit value the PTX instructions take.
__device__ __forceinline__ unsigned smem_addr(const void* ptr) {
  return static_cast<unsigned>(__cvta_generic_to_shared(ptr));
}

/// Copies 16 bytes from `src` to shared `dst` when `valid`; otherwise writes 16 zero bytes
/// (src-size 0 reads nothing), so masked rows hold finite values and never poison a product.
__device__ __forceinline__ void cp_async_16_zfill(void* dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
#if RADIX_ATTENTION_CP_ASYNC_L2_PREFETCH == 256
  // K/V rows are 128..512 contiguous bytes: asking L2 for the whole 256-byte span at the first
  // miss turns a row's 16-byte requests into one DRAM burst.
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "r"(src_bytes)
               : "memory");
#elif RADIX_ATTENTION_CP_ASYNC_L2_PREFETCH == 128
  asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)),
               "l"(src), "r"(src_bytes)
               : "memory");
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
#endif
}

/// As cp_async_16_zfill for 4 bytes, through L1 (`.cg` copies only 16): gathers of small
/// pieces that are read once per CTA (the permuted Q rows of the fp8 decode path).
__device__ __forceinline__ void cp_async_4_zfill(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/// Waits until at most `N` most recent commit groups are still in flight (this thread's).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace radix_attention::detail
