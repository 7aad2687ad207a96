#pragma once
/// @file
/// Umbrella header of the host-side prefix cache: block allocator, block tables, radix tree and
/// batch planner. Plain C++17; needs no CUDA (link radix_attention::cache).

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/eviction_policy.hpp"
#include "radix_attention/cache/radix_plan.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/error.hpp"
