#pragma once
/// @file
/// The parts of the radix_attention_torch._C module, each defined in its own file.

#include <pybind11/pybind11.h>

namespace radix_attention_torch {

/// BlockAllocator, RadixTree, SequenceManager and their result types (cache_bindings.cpp).
void bind_cache(pybind11::module_& m);
/// RadixPlan, plan_batch, BatchPlanner, RadixBatch (planner_bindings.cpp).
void bind_planner(pybind11::module_& m);
/// validate_block_tables, reference_paged_decode (reference_bindings.cpp).
void bind_reference(pybind11::module_& m);
/// paged_decode, radix_decode, merge_states (ops_bindings.cpp).
void bind_ops(pybind11::module_& m);
/// paged_prefill (prefill_bindings.cpp).
void bind_prefill(pybind11::module_& m);
/// kv_append, copy_blocks (kv_write_bindings.cpp).
void bind_kv_write(pybind11::module_& m);

}  // namespace radix_attention_torch
