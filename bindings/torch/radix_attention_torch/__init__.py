"""PyTorch binding of radix_attention: paged and shared-prefix (radix) decode attention over a
paged KV cache, and the radix-tree prefix cache that finds the shared prefixes.

Kernels (CUDA tensors, current stream):
    paged_decode, radix_decode, merge_states, radix_attention
Host side (plain C++ objects):
    BlockAllocator, RadixTree, SequenceManager, BatchPlanner (-> RadixBatch), plan_batch,
    validate_block_tables, reference_paged_decode (float64 CPU reference)
Errors (all subclasses of Error, itself a RuntimeError):
    InvalidArgument (also ValueError), ArgumentTypeError (also TypeError),
    CapacityError (also MemoryError), StateError, CudaError
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from ._C import (  # noqa: F401
    ArgumentTypeError,
    BatchPlanner,
    BlockAllocator,
    BlockCopy,
    CapacityError,
    CudaError,
    Error,
    ForkResult,
    InsertResult,
    InvalidArgument,
    NodeHandle,
    PrefixMatch,
    RadixBatch,
    RadixPlan,
    RadixTree,
    RadixTreeStats,
    SequenceManager,
    StateError,
    merge_states,
    paged_decode,
    plan_batch,
    radix_decode,
    reference_paged_decode,
    validate_block_tables,
)

__all__ = [
    "ArgumentTypeError", "BatchPlanner", "BlockAllocator", "BlockCopy", "CapacityError",
    "CudaError", "Error", "ForkResult", "InsertResult", "InvalidArgument", "NodeHandle",
    "PrefixMatch", "RadixBatch", "RadixPlan", "RadixTree", "RadixTreeStats", "SequenceManager",
    "StateError", "merge_states", "paged_decode", "plan_batch", "radix_decode", "radix_attention",
    "reference_paged_decode", "validate_block_tables",
]


def radix_attention(output, query, key_cache, value_cache, plan_or_tables, block_size, *,
                    scale=None, lse=None):
    """Decode attention in the shape of the original ``radix_attention_kernel`` sketch.

    Writes ``output`` ([num_seqs, num_q_heads, head_dim], query's dtype) and returns it.

    Args:
        output: result tensor, like ``query``.
        query: [num_seqs, num_q_heads, head_dim] float32 / float16 / bfloat16 CUDA tensor.
        key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim].
        plan_or_tables: either a :class:`RadixBatch` from :meth:`BatchPlanner.plan` (shared
            prefixes are read once: ``radix_decode``), or a pair ``(block_tables,
            context_lens)`` of int32 CUDA tensors (plain paged attention: ``paged_decode``).
        block_size: tokens per KV block; must equal ``key_cache.shape[1]`` (and the batch's).
        scale: softmax scale, default 1 / sqrt(head_dim).
        lse: optional float32 [num_seqs, num_q_heads] natural-log log-sum-exp output.
    """
    if not isinstance(block_size, int) or isinstance(block_size, bool):
        raise TypeError(f"radix_attention: block_size = {block_size!r}: must be an int")
    if not isinstance(key_cache, torch.Tensor) or key_cache.dim() != 4:
        raise ValueError("radix_attention: key_cache must be a 4-D tensor "
                         "[num_blocks, block_size, num_kv_heads, head_dim]")
    if key_cache.shape[1] != block_size:
        raise ValueError(f"radix_attention: block_size = {block_size}: must equal "
                         f"key_cache.shape[1] = {key_cache.shape[1]}")
    if isinstance(plan_or_tables, RadixBatch):
        if plan_or_tables.block_size != block_size:
            raise ValueError(f"radix_attention: block_size = {block_size}: the batch was planned "
                             f"with block_size {plan_or_tables.block_size}")
        return radix_decode(query, key_cache, value_cache, plan_or_tables, out=output, lse=lse,
                            scale=scale)
    if isinstance(plan_or_tables, (tuple, list)) and len(plan_or_tables) == 2:
        block_tables, context_lens = plan_or_tables
        return paged_decode(query, key_cache, value_cache, block_tables, context_lens, out=output,
                            lse=lse, scale=scale)
    raise TypeError("radix_attention: plan_or_tables must be a RadixBatch or a pair "
                    f"(block_tables, context_lens), not {type(plan_or_tables).__name__}")
