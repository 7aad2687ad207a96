#pragma once
/// @file
/// fp8 e4m3 as a KV-cache element type: dtype traits, the one quantiser every cache writer
/// uses, and the trait of element types a KV cache may hold. `is_supported_dtype_v` (core/
/// dtype.cuh) keeps its meaning, the element types of queries, outputs and 16/32-bit caches.

#include <cuda_fp8.h>

#include <type_traits>

#include "radix_attention/core/dtype.cuh"

namespace radix_attention {

/// @brief True for the element types a paged KV cache may hold: the attention types plus
/// fp8 e4m3 (written by kv_append with a scale, see core/kv_scales.hpp).
template <class T>
inline constexpr bool is_kv_cache_dtype_v =
    is_supported_dtype_v<T> || std::is_same_v<T, __nv_fp8_e4m3>;

/// @brief The largest finite e4m3 magnitude: where saturation clamps.
inline constexpr float kE4m3Max = 448.f;

/// @brief Quantises `x` to e4m3: round to nearest even of `x * inv_scale` (one fp32 multiply),
/// saturating finite overflow and +-Inf to +-448; a NaN stays a NaN (code 0x7F or 0xFF).
/// Host and device give the same bits (the device uses cvt.rn.satfinite on sm_89+).
__host__ __device__ inline __nv_fp8_storage_t quantize_e4m3(float x, float inv_scale) {
  return __nv_cvt_float_to_fp8(x * inv_scale, __NV_SATFINITE, __NV_E4M3);
}

/// @brief Two values at once (one cvt instruction on sm_89+); `lo` in the low byte, which is the
/// first of the two in memory.
__host__ __device__ inline __nv_fp8x2_storage_t quantize_e4m3x2(float lo, float hi,
                                                                float inv_scale) {
  return __nv_cvt_float2_to_fp8x2(make_float2(lo * inv_scale, hi * inv_scale), __NV_SATFINITE,
                                  __NV_E4M3);
}

/// @brief The value of an e4m3 code (exact in float; NaN codes give NaN).
__host__ __device__ inline float e4m3_to_float(__nv_fp8_storage_t code) {
  return __half2float(__half(__nv_cvt_fp8_to_halfraw(code, __NV_E4M3)));
}

template <>
struct DTypeTraits<__nv_fp8_e4m3> {
  static constexpr const char* name = "fp8_e4m3";
  /// Not a 16-bit mma operand: readers dequantise to float (then to bf16/half for mma).
  static constexpr bool is_16bit = false;
  /// The stored value without its scale (multiply by the KvScales scale to dequantise).
  __host__ __device__ static float to_float(__nv_fp8_e4m3 x) { return e4m3_to_float(x.__x); }
  /// Scale 1, saturating (see quantize_e4m3).
  __host__ __device__ static __nv_fp8_e4m3 from_float(float x) {
    __nv_fp8_e4m3 r;
    r.__x = quantize_e4m3(x, 1.f);
    return r;
  }
};

}  // namespace radix_attention
