#pragma once
/// @file
/// Umbrella header: the host-side prefix cache plus every kernel and launcher (needs nvcc;
/// link radix_attention::radix_attention).

#include "radix_attention/cache.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/dtype.cuh"
#include "radix_attention/core/views.hpp"
#include "radix_attention/ops/attention_batch.cuh"
#include "radix_attention/ops/kv_append.cuh"
#include "radix_attention/ops/merge_states.cuh"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/paged_prefill.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
