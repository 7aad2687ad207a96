#pragma once
/// @file
/// How a finished attention row leaves the kernels: its elements stored in the output type
/// (float partials or the 16-bit output) and its natural-log LSE formed from the base-2 online
/// softmax state every mainloop keeps (scores pre-multiplied by log2(e), so exp2 is one MUFU op).

#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "radix_attention/core/dtype.cuh"

namespace radix_attention::detail {

/// Stores N (1, 2 or 4) consecutive floats as N consecutive elements of U (float or a 16-bit
/// type) in one store; dst is aligned to N elements.
template <class U, int N>
__device__ __forceinline__ void store_row_elems(U* dst, const float (&v)[N]) {
  static_assert(N == 1 || N == 2 || N == 4, "one 1-, 2- or 4-element store");
  if constexpr (std::is_same_v<U, float>) {
    if constexpr (N == 4) {
      *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    } else if constexpr (N == 2) {
      *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
    } else {
      *dst = v[0];
    }
  } else {
    if constexpr (N == 4) {
      *reinterpret_cast<uint2*>(dst) =
          make_uint2(DTypeTraits<U>::pack2(v[0], v[1]), DTypeTraits<U>::pack2(v[2], v[3]));
    } else if constexpr (N == 2) {
      *reinterpret_cast<unsigned*>(dst) = DTypeTraits<U>::pack2(v[0], v[1]);
    } else {
      *dst = DTypeTraits<U>::from_float(v[0]);
    }
  }
}

/// Natural-log LSE of a row whose base-2 running maximum is `max_log2` and whose sum of
/// exp2(score - max_log2) is `sum`; -inf for a row that saw no key (sum 0).
__device__ __forceinline__ float natural_lse(float max_log2, float sum) {
  constexpr float kLn2 = 0.6931471805599453f;
  return sum > 0.f ? (max_log2 + log2f(sum)) * kLn2 : -INFINITY;
}

}  // namespace radix_attention::detail
