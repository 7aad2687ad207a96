#pragma once
/// @file
/// Umbrella header: the host-side prefix cache plus every kernel and launcher (needs nvcc;
/// link radix_attention::radix_attention).

#include "radix_attention/cache.hpp"
#include "radix_attention/core/cuda_check.cuh"
