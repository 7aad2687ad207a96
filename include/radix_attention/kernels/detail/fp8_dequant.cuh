#pragma once
/// @file
/// Reading an fp8 e4m3 KV cache in the attention kernels. The loaders copy fp8 rows into a
/// shared staging tile with the same 16-byte cp.async copies as a 16-bit cache (half the bytes
/// per token). The decode kernels build their MMA operands from that tile in registers
/// (fp8_mma_fragments.cuh, with e4m3x2_to); prefill converts a landed stage with
/// dequant_e4m3_tile into the 16-bit swizzled tile its unchanged mainloop reads.
///
/// The conversion is exact and unscaled (every e4m3 value is a half and a bf16 value): the
/// kernels fold the KvScales into the math instead (k_scale into the softmax scale, v_scale
/// into the output), so the result equals attention over the dequantised cache. NaN codes
/// (0x7F, 0xFF; kv_append writes them only for NaN inputs, and reports those) read as +-480.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "radix_attention/kernels/detail/bounds_check.cuh"

namespace radix_attention::detail {

/// Byte offset of 16-byte chunk `chunk` of row `row` in a row-major fp8 staging tile: the
/// conversion reads it linearly (consecutive threads, consecutive chunks), so no swizzle.
template <int HEAD_DIM>
struct Fp8StagingLayout {
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return row * HEAD_DIM + chunk * 16;
  }
};

/// prmt.b32 with its 4-bit selectors: bit 3 of a selector nibble fills the result byte with
/// the sign bit of the byte it selects (__byte_perm documents only the 3-bit copy).
__device__ __forceinline__ std::uint32_t prmt_b32(std::uint32_t a, std::uint32_t b,
                                                  std::uint32_t selector) {
  std::uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
}

/// The prmt selector that puts byte `i` of a and byte `j` of b (0..3 each) into bytes 0 and 2,
/// each followed by a byte of its sign: the operand e4m3x2_to reads.
__host__ __device__ constexpr std::uint32_t e4m3x2_selector(std::uint32_t i, std::uint32_t j) {
  return i | ((8u | i) << 4) | ((4u + j) << 8) | ((8u | (4u + j)) << 12);
}

/**
 * Two e4m3 codes, in bytes 0 and 2 of `x` with their sign bits replicated in bytes 1 and 3 (a
 * prmt with e4m3x2_selector), to a packed pair of T, exactly: the low half from byte 0. One
 * shift puts each code's exponent and mantissa under T's, and the sign under T's from the byte
 * above (the value times 2^-8 for half, 2^-120 for bf16; e4m3 subnormals become T subnormals);
 * a mask drops the rest and one packed multiply by the power of two restores the value. Every
 * step runs at full rate, unlike the float conversion units a cvt chain would use.
 */
template <class T>
__device__ __forceinline__ std::uint32_t e4m3x2_to(std::uint32_t x) {
  if constexpr (std::is_same_v<T, __half>) {
    // s eeee mmm at bits 7..0, s at 8 -> half bits 15 | 13..10 | 9..7: the value times 2^-8.
    std::uint32_t a = (x << 7) & 0xBF80BF80u;
    const __half2 bias = __halves2half2(__ushort_as_half(0x5C00), __ushort_as_half(0x5C00));
    const __half2 r = __hmul2(*reinterpret_cast<const __half2*>(&a), bias);
    return *reinterpret_cast<const std::uint32_t*>(&r);
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "e4m3x2_to: __half or __nv_bfloat16");
    // s eeee mmm at bits 7..0, s at 11 -> bf16 bits 15 | 10..7 | 6..4: the value times 2^-120.
    std::uint32_t a = (x << 4) & 0x87F087F0u;
    const __nv_bfloat162 bias =
        __halves2bfloat162(__ushort_as_bfloat16(0x7B80), __ushort_as_bfloat16(0x7B80));
    const __nv_bfloat162 r = __hmul2(*reinterpret_cast<const __nv_bfloat162*>(&a), bias);
    return *reinterpret_cast<const std::uint32_t*>(&r);
  }
}

/// Four e4m3 codes (byte 0 = first in memory) to four T values, exactly (e4m3x2_to): `lo`
/// holds elements 0 (low half) and 1, `hi` elements 2 and 3.
template <class T>
__device__ __forceinline__ void dequant_e4m3x4(std::uint32_t codes, std::uint32_t& lo,
                                               std::uint32_t& hi) {
  lo = e4m3x2_to<T>(prmt_b32(codes, codes, e4m3x2_selector(0, 1)));
  hi = e4m3x2_to<T>(prmt_b32(codes, codes, e4m3x2_selector(2, 3)));
}

/**
 * Converts a staged fp8 tile (ROWS x HEAD_DIM codes, Fp8StagingLayout) into a 16-bit tile:
 * fp8 chunk c of row r (16 elements) becomes 16-bit chunks 2c and 2c + 1 of that row, stored
 * at `dst + Dst::offset(r, chunk)` (the swizzled layout the mainloop's ldmatrix reads). THREADS
 * threads share the work; the caller synchronises before (staged data landed and visible) and
 * after (converted tile visible). A K stage followed by its V stage is one tile of twice the
 * rows (the row swizzles repeat every 8 rows, and tiles are multiples of 8 rows).
 */
template <class T, int HEAD_DIM, int ROWS, int THREADS, class Dst>
__device__ __forceinline__ void dequant_e4m3_tile(const unsigned char* __restrict__ src,
                                                  T* __restrict__ dst, int tid) {
  constexpr int kChunksPerRow = HEAD_DIM / 16;
  constexpr int kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % THREADS == 0, "an fp8 tile must split evenly over the threads");
  // Not unrolled: the caller's accumulators are live here, and one 16-byte chunk per step keeps
  // the conversion's registers at a dozen.
#pragma unroll 1
  for (int i = 0; i < kChunks / THREADS; ++i) {
    const int e = tid + i * THREADS;
    const int row = e / kChunksPerRow;
    const int chunk = e % kChunksPerRow;
    const uint4 codes =
        *reinterpret_cast<const uint4*>(src + Fp8StagingLayout<HEAD_DIM>::offset(row, chunk));
    uint4 lo, hi;
    dequant_e4m3x4<T>(codes.x, lo.x, lo.y);
    dequant_e4m3x4<T>(codes.y, lo.z, lo.w);
    dequant_e4m3x4<T>(codes.z, hi.x, hi.y);
    dequant_e4m3x4<T>(codes.w, hi.z, hi.w);
    *reinterpret_cast<uint4*>(dst + Dst::offset(row, 2 * chunk)) = lo;
    *reinterpret_cast<uint4*>(dst + Dst::offset(row, 2 * chunk + 1)) = hi;
  }
}

/// The dequantisation scale of `head` (per-head step 1) or of the tensor (step 0); 1 for a
/// null pointer. Bounds-check builds trap on a scale that is not positive and finite.
__device__ __forceinline__ float load_kv_scale(const float* scale, int head_step, int head) {
  if (scale == nullptr) return 1.f;
  const float s = __ldg(scale + head * head_step);
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(s > 0.f && s <= 3.40282347e38f);
  return s;
}

}  // namespace radix_attention::detail
