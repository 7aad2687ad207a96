"""PyTorch binding of radix_attention: paged and shared-prefix (radix) decode attention over a
paged KV cache, and the radix-tree prefix cache that finds the shared prefixes.

Kernels (CUDA tensors, current stream):
    paged_prefill, paged_decode, radix_decode, merge_states, radix_attention
Cache writers (CUDA tensors, current stream):
    kv_append, copy_blocks
Host side (plain C++ objects):
    BlockAllocator, RadixTree, SequenceManager, BatchPlanner (-> RadixBatch), plan_batch,
    validate_block_tables, reference_paged_decode (float64 CPU reference),
    tensor_parallel_heads (a tensor-parallel rank's query / kv heads)
Errors (all subclasses of Error, itself a RuntimeError):
    InvalidArgument (also ValueError), ArgumentTypeError (also TypeError),
    CapacityError (also MemoryError), StateError, CudaError
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from ._C import copy_blocks as _copy_blocks
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
    kv_append,
    merge_states,
    paged_decode,
    paged_prefill,
    plan_batch,
    radix_decode,
    reference_paged_decode,
    tensor_parallel_heads,
    validate_block_tables,
)

__all__ = [
    "ArgumentTypeError", "BatchPlanner", "BlockAllocator", "BlockCopy", "CapacityError",
    "CudaError", "Error", "ForkResult", "InsertResult", "InvalidArgument", "NodeHandle",
    "PrefixMatch", "RadixBatch", "RadixPlan", "RadixTree", "RadixTreeStats", "SequenceManager",
    "StateError", "copy_blocks", "kv_append", "merge_states", "paged_decode", "paged_prefill",
    "plan_batch", "radix_decode", "radix_attention", "reference_paged_decode",
    "tensor_parallel_heads", "validate_block_tables",
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


def copy_blocks(key_cache, value_cache, copies):
    """Copies whole blocks (or the first tokens of blocks) of the K and V caches, in one launch.

    Args:
        key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim] CUDA tensors
            (float32 / float16 / bfloat16 / float8_e4m3fn), unit stride along head_dim, the same
            strides for both (NHD, HND as ``hnd.transpose(1, 2)``, halves of a combined tensor).
        copies: what to copy, one of
            - an int32 CUDA tensor ``[n, 2]`` of (src, dst) block pairs (whole blocks) or
              ``[n, 3]`` of (src, dst, num_tokens) rows (the first num_tokens offsets);
            - a list of :class:`BlockCopy` (``SequenceManager.fork(...).copies``) or a
              :class:`ForkResult`;
            - a list of (src, dst) pairs.
            Ids must be in [0, num_blocks), no destination twice and no destination that another
            copy reads (the copies run concurrently; ids are not checked on the device).

    Runs on the current CUDA stream of the caches' device; a host list is uploaded first.
    """
    if isinstance(copies, ForkResult):
        copies = copies.copies
    if not isinstance(copies, torch.Tensor):
        rows = []
        for c in copies:
            if isinstance(c, BlockCopy):
                rows.append((c.src, c.dst, c.num_tokens))
            else:
                rows.append(tuple(int(x) for x in c))
        widths = {len(r) for r in rows}
        if len(widths) > 1 or not widths <= {2, 3}:
            raise ValueError("copy_blocks: copies must all be BlockCopy / (src, dst, num_tokens) "
                             "rows or all (src, dst) pairs")
        width = widths.pop() if widths else 2
        copies = torch.tensor(rows, dtype=torch.int32).reshape(-1, width)
        if isinstance(key_cache, torch.Tensor) and key_cache.is_cuda:
            copies = copies.to(key_cache.device, non_blocking=True)
    return _copy_blocks(key_cache, value_cache, copies)
