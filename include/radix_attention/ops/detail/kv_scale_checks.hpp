#pragma once
/// @file
/// The check of the fp8 dequantisation scales an attention launcher receives (paged_decode,
/// radix_decode, paged_prefill): they belong to an fp8 e4m3 cache only, in a known mode, at
/// float-aligned device addresses. Their values are device data the launcher never reads
/// (positive and finite by contract; bounds-check builds trap in the kernel otherwise).

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/kv_scales.hpp"

struct __nv_fp8_e4m3;  // cuda_fp8.h's type, named only: this check needs no CUDA header

namespace radix_attention::detail {

/// @throw InvalidArgument naming `name` (the option's spelling, e.g. "options.kv_scales").
template <class TKv>
void check_read_scales(const KvScales& s, const char* name) {
  const void* k = s.k_scale;
  const void* v = s.v_scale;
  if constexpr (!std::is_same_v<TKv, __nv_fp8_e4m3>) {
    expects_that(k == nullptr, name, ".k_scale = ", k,
                 ": must be nullptr: scales apply to an fp8 e4m3 cache only");
    expects_that(v == nullptr, name, ".v_scale = ", v,
                 ": must be nullptr: scales apply to an fp8 e4m3 cache only");
  } else {
    const int mode = static_cast<int>(s.mode);
    expects_that(s.mode == KvScaleMode::kPerTensor || s.mode == KvScaleMode::kPerHead, name,
                 ".mode = ", mode, ": must be kPerTensor or kPerHead");
    auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 4 == 0; };
    expects_that(aligned(k), name, ".k_scale = ", k, ": must be float-aligned");
    expects_that(aligned(v), name, ".v_scale = ", v, ": must be float-aligned");
  }
}

}  // namespace radix_attention::detail
