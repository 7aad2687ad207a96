#pragma once
/// @file
/// Paged prefill / extend kernels: a varlen batch of new query rows (qo_indptr CSR) attends to
/// each request's context through its block table, causal aligned to the end or unmasked.
/// Instances: 16-bit inputs on Hopper wgmma (sm_90a images; TMA-fed and warp specialised where
/// the block size is a multiple of 8, cp.async-fed otherwise) or mma.sync (sm_80+), float on
/// CUDA cores.
/// Launch through ops/paged_prefill.cuh, which checks every argument first.

#include "radix_attention/kernels/detail/prefill_mma.cuh"
#include "radix_attention/kernels/detail/prefill_params.cuh"
#include "radix_attention/kernels/detail/prefill_simt.cuh"
#include "radix_attention/kernels/detail/prefill_wgmma.cuh"
#include "radix_attention/kernels/detail/prefill_wgmma_tma.cuh"
