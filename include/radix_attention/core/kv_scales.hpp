#pragma once
/// @file
/// Dequantisation scales of an fp8 KV cache, shared by the cache writers (kv_append) and the
/// attention kernels that read an fp8 cache. Plain C++17: the pointers are device pointers.
///
/// The contract every kernel follows:
///   stored = e4m3_satfinite(x * (1.0f / scale))      (kv_append, round-to-nearest-even)
///   x      ~ float(stored) * scale                   (every reader, in fp32 registers)
/// where `scale` is `k_scale[0]` (per tensor) or `k_scale[head]` (per kv head) for K, and
/// likewise `v_scale` for V. The reciprocal is computed once in fp32 (IEEE division) and then
/// multiplied, so a host model that does the same float operations reproduces the cache bit
/// for bit. A null pointer means scale 1 for that tensor.

namespace radix_attention {

/// @brief How many scales each of K and V has.
enum class KvScaleMode {
  kPerTensor,  ///< one float: scale[0] for every head
  kPerHead,    ///< num_kv_heads floats: scale[head]
};

/// @brief Device-resident fp8 KV scales (see the file comment for the formulas). Scales are
/// read on the device, so they may change between launches (CUDA graphs) without a host sync;
/// they must be positive and finite (a zero or non-finite scale turns every value into a
/// saturated or NaN code).
struct KvScales {
  const float* k_scale = nullptr;  ///< device, 1 or num_kv_heads floats; nullptr = 1.0
  const float* v_scale = nullptr;  ///< device, 1 or num_kv_heads floats; nullptr = 1.0
  KvScaleMode mode = KvScaleMode::kPerTensor;
};

}  // namespace radix_attention
