#pragma once
/// @file
/// Element-type traits for the KV cache and query/output tensors: float, __half and
/// __nv_bfloat16. Kernels load/store these types and accumulate in float.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace radix_attention {

/// @brief True for the element types the kernels are instantiated for.
template <class T>
inline constexpr bool is_supported_dtype_v =
    std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

/// @brief Conversions and names for a supported element type `T`.
template <class T>
struct DTypeTraits;

template <>
struct DTypeTraits<float> {
  static constexpr const char* name = "float";
  /// Tensor-core (mma.sync) operand type? float inputs keep full precision on CUDA cores.
  static constexpr bool is_16bit = false;
  __host__ __device__ static float to_float(float x) { return x; }
  __host__ __device__ static float from_float(float x) { return x; }
};

template <>
struct DTypeTraits<__half> {
  static constexpr const char* name = "half";
  static constexpr bool is_16bit = true;
  __host__ __device__ static float to_float(__half x) { return __half2float(x); }
  __host__ __device__ static __half from_float(float x) { return __float2half_rn(x); }
  /// Packs (lo, hi) into one 32-bit register, `lo` in the low half (mma operand order).
  __device__ static unsigned pack2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
  }
};

template <>
struct DTypeTraits<__nv_bfloat16> {
  static constexpr const char* name = "bf16";
  static constexpr bool is_16bit = true;
  __host__ __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __host__ __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  __device__ static unsigned pack2(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&h);
  }
};

}  // namespace radix_attention
