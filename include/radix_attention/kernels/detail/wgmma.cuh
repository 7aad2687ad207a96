#pragma once
/// @file
/// Hopper warpgroup matrix multiply (`wgmma.mma_async`, sm_90a only) wrappers for the attention
/// tile engine: shared-memory matrix descriptors for the 128-byte-swizzled tiles the loaders
/// write, the fence / commit / wait protocol, and m64nNk16 products with float accumulators for
/// __half and __nv_bfloat16 operands (A from shared memory or from registers).
///
/// Everything here compiles to nothing but a trap outside an sm_90a device pass
/// (RADIX_ATTENTION_HAS_WGMMA is 0 there), so a build without sm_90a still compiles; the
/// launcher only selects wgmma kernels where the loaded image has them (arch_probe.cuh).
///
/// Tile layout (Sw128Layout in paged_tile_loader.cuh): a [rows][D] tile of 16-bit elements is
/// stored as D / 64 column blocks of [rows][64]; each row of a block is 128 bytes whose 16-byte
/// chunk c sits at c ^ (row % 8), every block 1024-byte aligned. Read K-major (K, Q: the reduction
/// runs along a row) it is PTX's 128B-swizzle canonical layout with 8-row groups 1024 bytes apart;
/// read MN-major (V in P V: the reduction runs along the rows) the same bytes are the transposed
/// canonical layout with 64-column blocks `rows * 128` bytes apart.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RADIX_ATTENTION_HAS_WGMMA 1
#else
#define RADIX_ATTENTION_HAS_WGMMA 0
#endif

namespace radix_attention::detail {

/// Matrix descriptor: start address, leading / stride byte offsets (16-byte units), 128B swizzle.
__device__ __forceinline__ std::uint64_t wgmma_descriptor(unsigned smem_byte_addr,
                                                          unsigned leading_bytes,
                                                          unsigned stride_bytes) {
  std::uint64_t d = 0;
  d |= static_cast<std::uint64_t>((smem_byte_addr >> 4) & 0x3FFF);
  d |= static_cast<std::uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<std::uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32;
  d |= static_cast<std::uint64_t>(1) << 62;  // 128-byte swizzle
  return d;
}

/// K-major operand (rows = M or N, reduction along the row): 8-row groups 1024 bytes apart;
/// the leading offset is unused by swizzled K-major layouts.
__device__ __forceinline__ std::uint64_t kmajor_descriptor(unsigned addr) {
  return wgmma_descriptor(addr, 16, 1024);
}

/// MN-major operand over a Sw128 tile of `rows` rows (the reduction runs down the rows):
/// 64-column blocks `rows * 128` bytes apart (leading), 8-row groups 1024 bytes apart (stride).
__device__ __forceinline__ std::uint64_t mnmajor_descriptor(unsigned addr, unsigned rows) {
  return wgmma_descriptor(addr, rows * 128, 1024);
}

/// `desc` moved `bytes` further in shared memory (a multiple of 16). The start-address field
/// (bits 0-13, in 16-byte units) does not carry into the next field for any address inside
/// the 228 KB of a CTA, so a plain add suffices.
__device__ __forceinline__ std::uint64_t descriptor_plus(std::uint64_t desc, unsigned bytes) {
  return desc + (bytes >> 4);
}

__device__ __forceinline__ void wgmma_fence() {
#if RADIX_ATTENTION_HAS_WGMMA
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if RADIX_ATTENTION_HAS_WGMMA
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if RADIX_ATTENTION_HAS_WGMMA
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

/// Keeps the compiler from moving accumulator reads / writes across an in-flight wgmma.
template <int N>
__device__ __forceinline__ void wgmma_fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

/// Writes of shared memory through the generic proxy (cp.async, st.shared) made visible to
/// the async proxy wgmma reads through; each writing thread fences before the CTA barrier.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if RADIX_ATTENTION_HAS_WGMMA
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/// Instances: N = 64 and 128 (the tile widths and head dims the wgmma kernels use), for
/// __half and __nv_bfloat16 operands. The two types differ only in the PTX type name, so one
/// macro defines both (the accumulator lists are spelled out once per N below).
template <class T, int N>
struct Wgmma;

// "{%0, ..., %(N-1)}": the accumulator registers of an m64nN product.
#define RADIX_ATTENTION_WGMMA_ACC_32 "{%0, %1, %2, %3, %4, %5, %6, %7, " \
  "%8, %9, %10, %11, %12, %13, %14, %15, " "%16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31}"
#define RADIX_ATTENTION_WGMMA_ACC_64 "{%0, %1, %2, %3, %4, %5, %6, %7, " \
  "%8, %9, %10, %11, %12, %13, %14, %15, " "%16, %17, %18, %19, %20, %21, %22, %23, " \
  "%24, %25, %26, %27, %28, %29, %30, %31, " "%32, %33, %34, %35, %36, %37, %38, %39, " \
  "%40, %41, %42, %43, %44, %45, %46, %47, " "%48, %49, %50, %51, %52, %53, %54, %55, " \
  "%56, %57, %58, %59, %60, %61, %62, %63}"
// The asm operand list binding d[0 .. N/2) to those registers.
#define RADIX_ATTENTION_WGMMA_D_32 "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), \
  "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), \
  "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), \
  "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), \
  "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define RADIX_ATTENTION_WGMMA_D_64 RADIX_ATTENTION_WGMMA_D_32, "+f"(d[32]), "+f"(d[33]), \
  "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
  "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
  "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), \
  "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), \
  "+f"(d[62]), "+f"(d[63])

/**
 * Defines Wgmma<TYPE, N> for the PTX operand type PTX_TYPE ("f16" / "bf16"); ACC = N / 2
 * accumulators per thread; SS_PRED / RS_PRED name the scale_d operand and SS_AB / RS_AB the A
 * and B operands that follow the accumulators in each form:
 *   ss(d, a, b, scale_d):    d (+)= A(smem, K-major) * B(smem, K-major); scale_d = 0 overwrites d.
 *   rs_tn(d, a, b, scale_d): d (+)= A(registers: the mma.sync m16n8k16 A fragment of the warp's
 *                            16 rows) * B(smem, MN-major, i.e. transposed).
 */
#if RADIX_ATTENTION_HAS_WGMMA
#define RADIX_ATTENTION_DEFINE_WGMMA(TYPE, PTX_TYPE, N, ACC, SS_PRED, SS_AB, RS_PRED, RS_AB)     \
  template <>                                                                                     \
  struct Wgmma<TYPE, N> {                                                                         \
    __device__ __forceinline__ static void ss(float (&d)[ACC], std::uint64_t a, std::uint64_t b,  \
                                              int scale_d) {                                      \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " SS_PRED ", 0;\n"                          \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE " "    \
                   RADIX_ATTENTION_WGMMA_ACC_##ACC ", " SS_AB ", p, 1, 1, 0, 0;\n}\n"             \
                   : RADIX_ATTENTION_WGMMA_D_##ACC                                                \
                   : "l"(a), "l"(b), "r"(scale_d));                                               \
    }                                                                                             \
    __device__ __forceinline__ static void rs_tn(float (&d)[ACC], const unsigned (&a)[4],         \
                                                 std::uint64_t b, int scale_d) {                  \
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " RS_PRED ", 0;\n"                          \
                   "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." PTX_TYPE "." PTX_TYPE " "    \
                   RADIX_ATTENTION_WGMMA_ACC_##ACC ", " RS_AB ", p, 1, 1, 1;\n}\n"                \
                   : RADIX_ATTENTION_WGMMA_D_##ACC                                                \
                   : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(scale_d));           \
    }                                                                                             \
  };
#else
// Outside an sm_90a device pass the products are never executed (the launchers only select
// wgmma kernels where the image has them): they trap.
#define RADIX_ATTENTION_DEFINE_WGMMA(TYPE, PTX_TYPE, N, ACC, SS_PRED, SS_AB, RS_PRED, RS_AB)     \
  template <>                                                                                     \
  struct Wgmma<TYPE, N> {                                                                         \
    __device__ __forceinline__ static void ss(float (&)[ACC], std::uint64_t, std::uint64_t, int) { \
      __trap();                                                                                   \
    }                                                                                             \
    __device__ __forceinline__ static void rs_tn(float (&)[ACC], const unsigned (&)[4],           \
                                                 std::uint64_t, int) {                            \
      __trap();                                                                                   \
    }                                                                                             \
  };
#endif

RADIX_ATTENTION_DEFINE_WGMMA(__half, "f16", 64, 32, "%34", "%32, %33", "%37",
                             "{%32, %33, %34, %35}, %36")
RADIX_ATTENTION_DEFINE_WGMMA(__half, "f16", 128, 64, "%66", "%64, %65", "%69",
                             "{%64, %65, %66, %67}, %68")
RADIX_ATTENTION_DEFINE_WGMMA(__nv_bfloat16, "bf16", 64, 32, "%34", "%32, %33", "%37",
                             "{%32, %33, %34, %35}, %36")
RADIX_ATTENTION_DEFINE_WGMMA(__nv_bfloat16, "bf16", 128, 64, "%66", "%64, %65", "%69",
                             "{%64, %65, %66, %67}, %68")

#undef RADIX_ATTENTION_DEFINE_WGMMA
#undef RADIX_ATTENTION_WGMMA_ACC_32
#undef RADIX_ATTENTION_WGMMA_ACC_64
#undef RADIX_ATTENTION_WGMMA_D_32
#undef RADIX_ATTENTION_WGMMA_D_64

}  // namespace radix_attention::detail
