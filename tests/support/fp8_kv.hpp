#pragma once
// Shared by the fp8 attention tests and benchmarks: a random K/V pool quantised to fp8 e4m3 the
// way kv_append stores it (stored = e4m3_satfinite(x * (1 / scale)), core/kv_scales.hpp), with
// the dequantised values (stored * scale) the float64 reference reads, so a test measures the
// kernel and not the format.

#include <cuda_fp8.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <random>
#include <vector>

#include "radix_attention/core/fp8.cuh"
#include "radix_attention/core/kv_scales.hpp"

namespace radix_attention::test {

/// One of K or V: codes, their dequantised values, the scales (1 or num_kv_heads) and the
/// unquantised values they came from.
struct Fp8Tensor {
  std::vector<__nv_fp8_e4m3> codes;
  std::vector<float> dequant;
  std::vector<float> scales;
  std::vector<float> raw;
};

/**
 * `slots` tokens x `heads` x `head_dim` values, head h uniform in [-a_h, a_h) with a_h drawn
 * from [0.25, 4) (so per-head scales differ), quantised with scale = max|x| / 448 of the tensor
 * or of each head. Every scale is positive even for an empty tensor.
 */
inline Fp8Tensor random_fp8_tensor(std::size_t slots, int heads, int head_dim, KvScaleMode mode,
                                   std::mt19937_64& rng) {
  std::uniform_real_distribution<float> amp(0.25f, 4.f), unit(-1.f, 1.f);
  std::vector<float> a(heads);
  for (float& x : a) x = amp(rng);
  Fp8Tensor t;
  const std::size_t n = slots * heads * head_dim;
  t.raw.resize(n);
  std::vector<float> amax(heads, 0.f);
  for (std::size_t i = 0; i < n; ++i) {
    const int h = static_cast<int>(i / head_dim % heads);
    t.raw[i] = unit(rng) * a[h];
    amax[h] = std::max(amax[h], std::abs(t.raw[i]));
  }
  if (mode == KvScaleMode::kPerTensor) {
    const float m = *std::max_element(amax.begin(), amax.end());
    t.scales.assign(1, m > 0.f ? m / kE4m3Max : 1.f);
  } else {
    for (float m : amax) t.scales.push_back(m > 0.f ? m / kE4m3Max : 1.f);
  }
  t.codes.resize(n);
  t.dequant.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const int h = static_cast<int>(i / head_dim % heads);
    const float scale = t.scales[mode == KvScaleMode::kPerTensor ? 0 : h];
    t.codes[i].__x = quantize_e4m3(t.raw[i], 1.f / scale);
    t.dequant[i] = e4m3_to_float(t.codes[i].__x) * scale;
  }
  return t;
}

}  // namespace radix_attention::test
