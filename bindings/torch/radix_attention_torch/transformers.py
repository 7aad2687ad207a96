"""radix_attention as the attention backend of transformers' continuous batching.

    import radix_attention_torch.transformers as rat

    rat.use_radix_attention(model)            # registers "paged|radix_attention" and selects it
    outputs = model.generate_batch(prompts, generation_config)

or, by name: ``rat.register()`` then ``attn_implementation="paged|radix_attention"`` in
``from_pretrained`` / ``model.set_attn_implementation``. This module is the only part of the
package that imports transformers (5.x; written against 5.17); the extension itself does not
depend on it.

What continuous batching hands a paged attention function (``generate_batch`` ->
``ContinuousBatchingIOs.get_model_kwargs`` -> the model -> each attention layer), and how it
maps onto the library:

- ``query``: [1, num_q_heads, total_q, head_dim], the packed new rows of every request of the
  step (prefill chunks and decode tokens mixed); ``key`` / ``value``: [1, num_kv_heads, total_q,
  head_dim]. Their memory is [total_q, heads, head_dim] (a transposed view), which the kernels
  read in place.
- ``cu_seq_lens_q``: int32 [num_seqs + 1], the CSR of the rows -> ``qo_indptr``.
  ``cu_seq_lens_k``: int32 [num_seqs + 1], cumulative (cached + new) tokens per request ->
  ``context_lens = diff(cu_seq_lens_k)``. ``max_seqlen_q`` / ``max_seqlen_k``: host ints (used as
  the kernels' host-known bounds). Padded batches (CUDA graphs) add requests of length 0.
- ``cache``: the ``PagedAttentionCache``. Per layer one K and one V tensor
  [(num_blocks + 2) * block_size, num_kv_heads, head_dim] ("pages"; the two extra blocks are a
  zeroed read-trash block and a write-trash block). Viewed as [num_blocks + 2, block_size,
  num_kv_heads, head_dim] it is exactly the library's dense NHD cache: page p = block *
  block_size + offset. ``cache.layer_index_to_group_indices[layer]`` gives (group, index of the
  layer's tensors).
- ``write_index[group]``: int64 [total_q], the page of every new token -> kv_append's slot
  mapping (padding rows point at ``cache.write_trash_index``: mapped to -1, skipped).
- ``read_index[group]``: int64, per request (in cu_seq_lens_k order) the pages of all its
  tokens, cached and new. The block table row of request s is every block_size-th entry of its
  run divided by block_size (``read_index[cu_k[s] + j * block_size] // block_size``): the blocks
  transformers' allocator gave it, shared blocks (block sharing / prefix caching) included.
  When no request of the step has cached tokens, transformers passes an empty read_index and
  the same table is read from write_index. The tables, context lengths and slot mapping are
  built once per forward (at the first layer of the step) on the device, without a host
  synchronisation, and reused by the group's other layers (the group's first layer rebuilds them
  every forward, so a CUDA graph captures the ops that build them).
- ``block_table``: transformers' decode fast path for flash_attn_with_kvcache only; it is never
  enabled for this implementation (``max_blocks_per_request`` is forced to 0 for non-flash
  attention), and rejected if present. ``attention_mask``: None (transformers builds masks for
  ``paged|eager`` / ``paged|sdpa`` only); masking is the kernels' end-aligned causal mask.
- ``scaling``: the model's softmax scale, passed through. GQA / MQA: the kv head of query head
  h is h // (num_q_heads // num_kv_heads), as in transformers' ``repeat_kv``.

Per layer and step: ``kv_append`` writes the new K/V rows into their pages, then
``paged_prefill`` computes every row of the batch (prefill / extend rows and decode rows alike:
a decode row is a request with q_len 1), except for decode-only steps (every request one row),
which run ``radix_decode``: a BatchPlanner (one per cache and model shape) plans the step's
block tables once per forward, so that blocks transformers' block sharing gave several
requests are read once for all of them. Planning reads the tables back to the host (one
synchronisation per decode step, at the first layer). While a CUDA graph is being captured (no
host work can be captured) and with ``configure(radix_decode=False)``, decode-only steps run
``paged_decode`` instead.

Batch-invariant mode, ``configure(deterministic=True)``: the planner makes batch-invariant
plans (PlannerOptions::deterministic) and every row with one query in a step (decode tokens,
also inside mixed steps, and the last token of a prompt chunk of length one) is computed by
``radix_decode`` on those plans, so a request's attention output bits depend only on its own
tokens, not on the rest of the batch nor on whether its prefix blocks are shared. Prefill rows
(``paged_prefill``: one request's rows per tile, keys walked from 0 in fixed tiles) are
batch-invariant as they are. Whether the generated tokens are is up to the rest of the model
(its GEMMs may round differently at different batch sizes).

Not supported, refused with NotImplementedError: sliding-window layers, attention logit
soft-capping, attention sinks, dropout, query and value head sizes that differ, head_dim
outside {64, 128, 256}, transformers' flash decode fast path. The function is excluded from
torch.compile (``torch.compiler.disable``); CUDA graphs of transformers' padded path capture
its kernels (no host synchronisation in it).
"""
import math

import torch

import radix_attention_torch as _ra

#: The name this module registers with transformers.AttentionInterface.
IMPLEMENTATION = "paged|radix_attention"

_settings = {"radix_decode": True, "deterministic": False}


def configure(*, radix_decode=None, deterministic=None):
    """Sets how the backend computes decode rows (module-wide; returns the settings):

    - ``radix_decode`` (default True): decode-only steps through ``radix_decode`` planned by a
      BatchPlanner (shared blocks read once); False: ``paged_decode``.
    - ``deterministic`` (default False): batch-invariant plans, and every one-row request of a
      step through ``radix_decode`` (see the module docstring). Implies radix_decode.
    """
    if radix_decode is not None:
        _settings["radix_decode"] = bool(radix_decode)
    if deterministic is not None:
        _settings["deterministic"] = bool(deterministic)
    return dict(_settings)

_HEAD_DIMS = (64, 128, 256)


class _StepTables:
    """Device arrays of one forward step, shared by the layers of one cache-layer group."""

    __slots__ = ("key", "qo_indptr", "block_tables", "context_lens", "slots", "max_q_len",
                 "max_kv_len", "num_seqs", "decode_only", "radix_batch", "single_rows")


def _single(value, what):
    """cu_seq_lens_k / max_seqlen_k are dicts keyed by layer type in hybrid models."""
    if isinstance(value, dict):
        if "full_attention" not in value:
            raise NotImplementedError(
                f"{IMPLEMENTATION}: {what} has no 'full_attention' entry (layer types "
                f"{sorted(value)}): only full-attention layers are supported")
        return value["full_attention"]
    return value


def _planner(cache, num_q_heads, dtype):
    """The BatchPlanner of this cache and model shape (kept on the cache object)."""
    deterministic = _settings["deterministic"]
    key = (num_q_heads, cache.num_key_value_heads, cache.head_dim, dtype, deterministic)
    planners = getattr(cache, "_radix_attention_planners", None)
    if planners is None:
        planners = cache._radix_attention_planners = {}
    if key not in planners:
        planners[key] = _ra.BatchPlanner(num_q_heads, cache.num_key_value_heads, cache.head_dim,
                                         dtype, deterministic=deterministic)
    return planners[key]


def _plan_radix(cache, t, num_q_heads, dtype):
    """Plans the step's one-row requests (all of them on a decode-only step) for radix_decode,
    or leaves t.radix_batch None where radix_decode is not used."""
    t.radix_batch, t.single_rows = None, None
    deterministic = _settings["deterministic"]
    if not (_settings["radix_decode"] or deterministic) or t.num_seqs == 0:
        return
    if torch.cuda.is_current_stream_capturing():
        return  # planning is host work: a captured graph runs paged_decode / paged_prefill
    planner = _planner(cache, num_q_heads, dtype)
    if t.decode_only:
        t.radix_batch = planner.plan_tables(t.block_tables, t.context_lens, cache.block_size)
        return
    if not deterministic:
        return
    q_lens = (t.qo_indptr[1:] - t.qo_indptr[:-1])
    single = torch.nonzero(q_lens == 1).flatten()
    if single.numel() == 0:
        return
    t.single_rows = t.qo_indptr[single].to(torch.int64)  # each such request's one row
    t.radix_batch = planner.plan_tables(t.block_tables[single].contiguous(),
                                        t.context_lens[single].contiguous(), cache.block_size)


def _step_tables(cache, group, first_layer_of_group, query_rows, kwargs):
    """The tables of this forward, built at its first layer and cached on the cache object."""
    write_index = kwargs["write_index"][group]
    cached = getattr(cache, "_radix_attention_step", None)
    # The IO object hands every layer of one forward the same index tensor objects, and a new
    # slice of its static storage to the next forward. Holding a reference to it makes the
    # identity test exact (the object cannot be freed and its id reused). The group's first
    # layer always rebuilds: a CUDA-graph capture runs the forward twice on the SAME kwargs
    # (a warm-up, then the capture), and the captured graph must contain the ops that build the
    # tables from the static index storage, or its replays would read the warm-up's tables.
    if (not first_layer_of_group and cached is not None and cached[group] is not None
            and cached[group].key is write_index):
        return cached[group]

    read_index = kwargs["read_index"][group]
    cu_q = kwargs["cu_seq_lens_q"]
    cu_k = _single(kwargs["cu_seq_lens_k"], "cu_seq_lens_k")
    max_q = int(kwargs["max_seqlen_q"])
    max_k = int(_single(kwargs["max_seqlen_k"], "max_seqlen_k"))
    device = write_index.device
    bs = cache.block_size

    t = _StepTables()
    t.key = write_index
    t.num_seqs = cu_q.numel() - 1
    t.qo_indptr = cu_q.to(device=device, dtype=torch.int32).contiguous()
    cu_k = cu_k.to(device=device, dtype=torch.int64)
    t.context_lens = (cu_k[1:] - cu_k[:-1]).to(torch.int32)
    max_blocks = max(1, -(-max_k // bs))
    source = read_index if read_index.numel() > 0 else write_index  # no cached tokens: same runs
    if source.numel() > 0 and t.num_seqs > 0:
        pos = cu_k[:-1, None] + torch.arange(max_blocks, device=device, dtype=torch.int64) * bs
        valid = pos < cu_k[1:, None]
        pages = source[pos.clamp(max=source.numel() - 1)]
        t.block_tables = torch.where(valid, pages // bs, 0).to(torch.int32)
    else:
        t.block_tables = torch.zeros((t.num_seqs, max_blocks), dtype=torch.int32, device=device)
    trash = getattr(cache, "write_trash_index", None)
    slots = write_index if trash is None else torch.where(write_index == trash, -1, write_index)
    t.slots = slots.to(torch.int32)
    t.max_q_len = min(max(max_q, 0), query_rows)
    t.max_kv_len = max_blocks * bs if max_k <= 0 else max_k
    # One row per request and no padding rows: plain decode.
    t.decode_only = max_q == 1 and query_rows == t.num_seqs

    if cached is None or len(cached) != cache.num_groups:
        cached = [None] * cache.num_groups
        cache._radix_attention_step = cached
    cached[group] = t
    return t


def _check_supported(module, cache, query, value, dropout, kwargs):
    layer = module.layer_idx
    config = getattr(module, "config", None)
    window = getattr(cache, "sliding_windows", {}).get(layer, 1)
    if (window not in (None, 1) or getattr(module, "sliding_window", None)
            or getattr(cache, "num_sliding_attention_groups", 0)):
        raise NotImplementedError(
            f"{IMPLEMENTATION}: layer {layer} uses sliding-window attention, which is not "
            "supported; use paged|sdpa or paged|flash_attention_2 for this model")
    if kwargs.get("softcap") or getattr(config, "attn_logit_softcapping", None):
        raise NotImplementedError(
            f"{IMPLEMENTATION}: attention logit soft-capping is not supported")
    if hasattr(module, "sinks") or "s_aux" in kwargs:
        raise NotImplementedError(f"{IMPLEMENTATION}: attention sinks are not supported")
    if dropout:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: dropout = {dropout} is not supported (inference only)")
    if kwargs.get("block_table") is not None:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: transformers' block-table decode path (max_blocks_per_request "
            "> 0) is for flash_attn_with_kvcache; set max_blocks_per_request=0")
    if query.shape[-1] != value.shape[-1]:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: query head size {query.shape[-1]} != value head size "
            f"{value.shape[-1]} is not supported")
    if query.shape[-1] not in _HEAD_DIMS:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: head_dim = {query.shape[-1]} is not supported (64, 128, 256)")


def _rows(x):
    """[1, heads, rows, head_dim] -> [rows, heads, head_dim] with dense heads (a view when the
    memory is already [rows, heads, head_dim], as after the model's .view().transpose())."""
    r = x[0].transpose(0, 1)
    if r.stride(-1) != 1 or (r.shape[1] > 1 and r.stride(1) != r.shape[2]):
        r = r.contiguous()
    return r


@torch.compiler.disable
def paged_attention_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                            **kwargs):
    """The ``paged|radix_attention`` attention function (see the module docstring for what it
    receives and how it maps it onto the library).

    Writes this step's K/V rows into the layer's cache pages with ``kv_append``, then runs
    ``paged_prefill`` over all rows (``paged_decode`` for decode-only steps).

    Returns ``(out [1, total_q, num_q_heads, head_dim], None)``, as transformers' paged|sdpa.
    """
    cache = kwargs.get("cache")
    if cache is None:
        raise ValueError(
            f"`{IMPLEMENTATION}` was called without a paged attention cache: it serves "
            "transformers' continuous batching (model.generate_batch / init_continuous_batching)"
            "; use sdpa for a standard forward")
    _check_supported(module, cache, query, value, dropout, kwargs)
    group, index_in_group = cache.layer_index_to_group_indices[module.layer_idx]

    q = _rows(query)
    k = _rows(key)
    v = _rows(value)
    if k.stride() != v.stride():
        k, v = k.contiguous(), v.contiguous()
    t = _step_tables(cache, group, index_in_group == 0, q.shape[0], kwargs)
    if index_in_group == 0:
        _plan_radix(cache, t, q.shape[1], q.dtype)

    bs, heads, dim = cache.block_size, cache.num_key_value_heads, cache.head_dim
    k_cache = cache.key_cache[index_in_group].view(-1, bs, heads, dim)
    v_cache = cache.value_cache[index_in_group].view(-1, bs, heads, dim)
    _ra.kv_append(k, v, k_cache, v_cache, t.slots)

    if scaling is None:
        scaling = getattr(module, "scaling", None) or 1.0 / math.sqrt(q.shape[-1])
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if t.decode_only and t.radix_batch is not None:
        _ra.radix_decode(q.contiguous(), k_cache, v_cache, t.radix_batch, out=out,
                         scale=float(scaling))
    elif t.decode_only:
        _ra.paged_decode(q.contiguous(), k_cache, v_cache, t.block_tables, t.context_lens,
                         out=out, scale=float(scaling), max_context_len=t.max_kv_len)
    else:
        _ra.paged_prefill(q, k_cache, v_cache, t.qo_indptr, t.block_tables, t.context_lens,
                          max_q_len=t.max_q_len, out=out, scale=float(scaling), causal=True,
                          max_context_len=t.max_kv_len)
        if t.radix_batch is not None:  # batch-invariant mode: one-row requests via radix_decode
            single_out = torch.empty((t.single_rows.numel(), q.shape[1], q.shape[2]),
                                     dtype=q.dtype, device=q.device)
            _ra.radix_decode(q[t.single_rows].contiguous(), k_cache, v_cache, t.radix_batch,
                             out=single_out, scale=float(scaling))
            out[t.single_rows] = single_out
    return out.unsqueeze(0), None


def register(name=IMPLEMENTATION):
    """Registers :func:`paged_attention_forward` with ``transformers.AttentionInterface`` under
    ``name`` (default ``"paged|radix_attention"``; the ``paged|`` prefix is what makes
    continuous batching hand it the paged cache). Returns the name."""
    from transformers import AttentionInterface

    if not name.startswith("paged|"):
        raise ValueError(f"register: name = {name!r}: must start with 'paged|'")
    AttentionInterface.register(name, paged_attention_forward)
    return name


def check_config(config):
    """Raises NotImplementedError if a model config uses what this backend refuses (sliding
    windows, soft-capping, head sizes outside {64, 128, 256}); returns None otherwise."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(config, "layer_types", None) or []
    if getattr(config, "sliding_window", None) is not None and (
            not layer_types or "sliding_attention" in layer_types):
        if getattr(config, "use_sliding_window", True):
            raise NotImplementedError(
                f"{IMPLEMENTATION}: the model uses sliding-window attention "
                f"(sliding_window = {config.sliding_window}), which is not supported")
    if "sliding_attention" in layer_types:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: the model has sliding-attention layers, which are not supported")
    if getattr(config, "attn_logit_softcapping", None):
        raise NotImplementedError(
            f"{IMPLEMENTATION}: attention logit soft-capping is not supported")
    head_dim = getattr(config, "head_dim", None) or (
        config.hidden_size // config.num_attention_heads)
    if head_dim not in _HEAD_DIMS:
        raise NotImplementedError(
            f"{IMPLEMENTATION}: head_dim = {head_dim} is not supported (64, 128, 256)")


def use_radix_attention(model, *, radix_decode=None, deterministic=None):
    """Registers the backend, checks the model's config and switches ``model`` to
    ``"paged|radix_attention"`` (``model.set_attn_implementation``); ``radix_decode`` /
    ``deterministic`` as in :func:`configure` when given. Returns the model."""
    configure(radix_decode=radix_decode, deterministic=deterministic)
    check_config(model.config)
    register()
    model.set_attn_implementation(IMPLEMENTATION)
    return model
