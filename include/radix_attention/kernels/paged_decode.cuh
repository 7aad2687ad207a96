#pragma once
/// @file
/// Paged decode attention kernels (one query token per sequence over its block table).
/// Host code calls radix_attention::paged_decode (ops/paged_decode.cuh), which validates the
/// arguments, plans split-KV and picks the instance; this header is the kernels themselves:
///  - detail::paged_decode_tc_kernel<T, D>: __half / __nv_bfloat16, tensor cores;
///  - detail::paged_decode_simt_kernel<float, D>: float, CUDA cores.
/// Both write the final row (num_splits == 1) or a split-KV partial state that
/// merge_states_kernel (kernels/merge_states.cuh) combines.

#include "radix_attention/kernels/detail/paged_decode_common.cuh"
#include "radix_attention/kernels/detail/paged_decode_simt.cuh"
#include "radix_attention/kernels/detail/paged_decode_tc.cuh"
#include "radix_attention/kernels/merge_states.cuh"
