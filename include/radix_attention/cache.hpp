#pragma once
/// @file
/// Umbrella header of the host-side prefix cache: block allocator, block tables, radix tree and
/// batch planner, plus the plan layer they hand the kernels (plan/). Plain C++17; needs no
/// CUDA (link radix_attention::cache).

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/eviction_policy.hpp"
#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/head_range.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/plan/radix_plan.hpp"
#include "radix_attention/plan/radix_plan_layout.hpp"
