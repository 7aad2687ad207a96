"""Test helpers: random paged batches and a float64 SDPA reference over gathered KV."""
import math

import torch

F = torch.nn.functional

# Relative to the largest reference magnitude; 16-bit inputs carry ~3 significant digits.
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def make_cache(num_blocks, block_size, kv_heads, head_dim, dtype, g, device="cuda"):
    shape = (num_blocks, block_size, kv_heads, head_dim)
    k = torch.randn(shape, generator=g).to(dtype).to(device)
    v = torch.randn(shape, generator=g).to(dtype).to(device)
    return k, v


def reference(query, k_cache, v_cache, tables, lens, scale=None):
    """float64 SDPA per sequence over the KV gathered through its block-table row.
    Returns (out float64 [S, Hq, D], lse float64 [S, Hq]); empty contexts give 0 and -inf."""
    s_count, hq, d = query.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(s_count, hq, d, dtype=torch.float64, device=query.device)
    lse = torch.full((s_count, hq), -math.inf, dtype=torch.float64, device=query.device)
    tables, lens = tables.long(), lens.tolist()
    for s in range(s_count):
        n = lens[s]
        if n == 0:
            continue
        t = torch.arange(n, device=query.device)
        blocks = tables[s, t // bs]
        k = k_cache[blocks, t % bs].double().repeat_interleave(hq // hkv, dim=1)  # [n, Hq, D]
        v = v_cache[blocks, t % bs].double().repeat_interleave(hq // hkv, dim=1)
        q = query[s].double()  # [Hq, D]
        out[s] = F.scaled_dot_product_attention(
            q[:, None, :], k.transpose(0, 1), v.transpose(0, 1), scale=scale)[:, 0, :]
        lse[s] = torch.logsumexp(scale * torch.einsum("hd,nhd->hn", q, k), dim=1)
    return out, lse


def assert_close(actual, expected, dtype, what):
    err = (actual.double() - expected).abs().max().item()
    ref = max(expected.abs().max().item(), 1e-6)
    assert not torch.isnan(actual).any(), f"{what}: NaN in the output"
    assert err / ref < TOL[dtype], f"{what}: max abs error {err:.3g} vs max |ref| {ref:.3g}"


def random_batch(num_seqs, block_size, num_blocks, max_ctx, g, shared_prefix=0, groups=1,
                 zero_len=False):
    """Block tables with randomly placed blocks. With shared_prefix > 0 the sequences fall into
    `groups` groups whose members hold the same blocks for the first shared_prefix tokens
    (rounded down to whole blocks), as sequences sharing a cached prompt do."""
    perm = torch.randperm(num_blocks, generator=g).tolist()
    lens = torch.randint(1, max_ctx + 1, (num_seqs,), generator=g)
    if zero_len:
        lens[0] = 0
    shared_blocks = shared_prefix // block_size
    if shared_blocks:
        lens = torch.clamp(lens, min=0) + shared_blocks * block_size
        if zero_len:
            lens[0] = 0
    max_blocks = int((lens.max().item() + block_size - 1) // block_size)
    tables = torch.full((num_seqs, max_blocks), -1, dtype=torch.int32)
    group_prefix = [[perm.pop() for _ in range(shared_blocks)] for _ in range(groups)]
    for s in range(num_seqs):
        n = int((lens[s].item() + block_size - 1) // block_size)
        row = []
        if shared_blocks and lens[s] > 0:
            row = list(group_prefix[s % groups])
        while len(row) < n:
            row.append(perm.pop())
        tables[s, :n] = torch.tensor(row[:n], dtype=torch.int32)
    return tables, lens.to(torch.int32)
