"""paged_prefill against SDPA over gathered KV; kv_append and copy_blocks read back."""
import math

import pytest

from extension_import import import_extension  # noqa: E402

torch = pytest.importorskip("torch")
ra = import_extension()
from attention_reference import TOL, make_cache, random_batch  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

F = torch.nn.functional
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def prefill_reference(query, qo_indptr, k_cache, v_cache, tables, lens, causal, scale=None):
    """float64 SDPA per request: row i of a request with q_len rows and kv_len keys sees keys
    < kv_len - q_len + i + 1 (causal) or all of them. Returns (out, lse), zeros / -inf for rows
    that see no key."""
    total_q, hq, d = query.shape
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    out = torch.zeros(total_q, hq, d, dtype=torch.float64, device=query.device)
    lse = torch.full((total_q, hq), -math.inf, dtype=torch.float64, device=query.device)
    qo, lens_l, tables = qo_indptr.tolist(), lens.tolist(), tables.long()
    for s in range(len(lens_l)):
        a, b, n = qo[s], qo[s + 1], lens_l[s]
        if b == a or n == 0:
            continue
        t = torch.arange(n, device=query.device)
        blocks = tables[s, t // bs]
        k = k_cache[blocks, t % bs].double().repeat_interleave(hq // hkv, dim=1)
        v = v_cache[blocks, t % bs].double().repeat_interleave(hq // hkv, dim=1)
        q = query[a:b].double()
        scores = scale * torch.einsum("qhd,nhd->hqn", q, k)
        if causal:
            limit = n - (b - a) + torch.arange(b - a, device=query.device) + 1
            masked = torch.arange(n, device=query.device)[None, :] >= limit[:, None]
            scores = scores.masked_fill(masked[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)  # [hq, q]
        seen = torch.isfinite(row_lse)
        p = torch.where(seen[..., None], torch.softmax(scores, dim=-1), 0.0)
        out[a:b] = torch.einsum("hqn,nhd->qhd", torch.nan_to_num(p), v)
        lse[a:b] = row_lse.transpose(0, 1)
    return out, lse


def check(actual, expected, dtype, what):
    assert not torch.isnan(actual).any(), f"{what}: NaN in the output"
    err = (actual.double() - expected).abs().max().item()
    ref = max(expected.abs().max().item(), 1e-6)
    assert err / ref < TOL[dtype], f"{what}: max abs error {err:.3g} vs max |ref| {ref:.3g}"


def random_prefill(num_seqs, block_size, hq, hkv, d, dtype, g, max_new, max_cached, shared=0,
                   q_len_one=False):
    """A batch of requests with random cached prefixes and new rows; contexts = cached + new."""
    max_ctx = max_new + max_cached
    num_blocks = num_seqs * ((max_ctx + shared) // block_size + 2) + 8
    k, v = make_cache(num_blocks, block_size, hkv, d, dtype, g)
    tables, lens = random_batch(num_seqs, block_size, num_blocks, max_ctx, g,
                                shared_prefix=shared, groups=2)
    if q_len_one:
        q_lens = torch.ones(num_seqs, dtype=torch.int32)
    else:
        q_lens = torch.randint(1, max_new + 1, (num_seqs,), generator=g, dtype=torch.int32)
    q_lens = torch.minimum(q_lens, lens)
    qo = torch.zeros(num_seqs + 1, dtype=torch.int32)
    qo[1:] = torch.cumsum(q_lens, 0)
    q = torch.randn(int(qo[-1]), hq, d, generator=g).to(dtype).cuda()
    return q, qo.cuda(), k, v, tables.cuda(), lens.cuda(), int(q_lens.max())


CASES = [
    (dt, bs, hq, hkv, d)
    for dt in DTYPES
    for bs in (1, 16)
    for (hq, hkv, d) in ((8, 2, 128), (4, 4, 64), (8, 1, 256))
]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dtype,block_size,hq,hkv,head_dim", CASES)
def test_paged_prefill_matches_sdpa(dtype, block_size, hq, hkv, head_dim, causal, gen):
    q, qo, k, v, tables, lens, max_q = random_prefill(5, block_size, hq, hkv, head_dim, dtype,
                                                      gen, max_new=70, max_cached=150)
    out = torch.full_like(q, float("nan"))  # every row is written
    lse = torch.empty(q.shape[0], hq, dtype=torch.float32, device="cuda")
    res = ra.paged_prefill(q, k, v, qo, tables, lens, out=out, lse=lse, causal=causal)
    assert res.data_ptr() == out.data_ptr()
    ref, ref_lse = prefill_reference(q, qo, k, v, tables, lens, causal)
    check(out, ref, dtype, f"paged_prefill causal={causal}")
    assert torch.allclose(lse.double(), ref_lse, atol=2e-3, rtol=2e-3)
    # max_q_len given on the host gives the same result; an explicit scale.
    out2 = ra.paged_prefill(q, k, v, qo, tables, lens, max_q_len=max_q, causal=causal, scale=0.07)
    ref2, _ = prefill_reference(q, qo, k, v, tables, lens, causal, scale=0.07)
    check(out2, ref2, dtype, "paged_prefill scale")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 16])
def test_paged_prefill_with_shared_prefix_and_q_len_one(dtype, block_size, gen):
    # q_len 1 rows (decode) over contexts sharing a 256-token prefix equal paged_decode.
    q, qo, k, v, tables, lens, _ = random_prefill(9, block_size, 8, 2, 128, dtype, gen,
                                                  max_new=1, max_cached=90, shared=256,
                                                  q_len_one=True)
    out = ra.paged_prefill(q, k, v, qo, tables, lens)
    ref, _ = prefill_reference(q, qo, k, v, tables, lens, True)
    check(out, ref, dtype, "paged_prefill q_len 1")
    dec = ra.paged_decode(q, k, v, tables, lens)
    check(dec, ref, dtype, "paged_decode")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_prefill_strided_query_and_hnd_cache(dtype, gen):
    hq, hkv, d, bs = 8, 2, 64, 16
    q, qo, k, v, tables, lens, _ = random_prefill(4, bs, hq, hkv, d, dtype, gen, max_new=40,
                                                  max_cached=60)
    # q as the slice of a fused [rows, (hq + 2 hkv) * d] projection.
    fused = torch.randn(q.shape[0], (hq + 2 * hkv) * d, generator=gen).to(dtype).cuda()
    fused[:, : hq * d] = q.reshape(q.shape[0], -1)
    q_view = fused[:, : hq * d].view(q.shape[0], hq, d)
    assert not q_view.is_contiguous()
    # HND cache [blocks, heads, block, dim] read through a transposed view.
    k_hnd = k.transpose(1, 2).contiguous()
    v_hnd = v.transpose(1, 2).contiguous()
    out_wide = torch.zeros(q.shape[0], 2 * hq * d, dtype=dtype, device="cuda")
    out_view = out_wide[:, : hq * d].view(q.shape[0], hq, d)
    ra.paged_prefill(q_view, k_hnd.transpose(1, 2), v_hnd.transpose(1, 2), qo, tables, lens,
                     out=out_view)
    ref, _ = prefill_reference(q, qo, k, v, tables, lens, True)
    check(out_view, ref, dtype, "paged_prefill strided q / HND cache")
    assert torch.all(out_wide[:, hq * d:] == 0)  # nothing outside out's rows


def test_paged_prefill_empty_and_errors(gen):
    q, qo, k, v, tables, lens, _ = random_prefill(3, 16, 4, 2, 64, torch.float16, gen,
                                                  max_new=8, max_cached=8)
    with pytest.raises(TypeError):
        ra.paged_prefill(q.float(), k, v, qo, tables, lens)
    with pytest.raises(ValueError, match="qo_indptr"):
        ra.paged_prefill(q, k, v, qo.view(1, -1), tables, lens)
    with pytest.raises(ValueError, match="value_cache"):
        ra.paged_prefill(q, k, v.transpose(1, 2).contiguous().transpose(1, 2), qo, tables, lens)
    with pytest.raises(ValueError, match="max_q_len"):
        ra.paged_prefill(q, k, v, qo, tables, lens, max_q_len=q.shape[0] + 1)
    # No requests: nothing launched.
    empty = ra.paged_prefill(q[:0], k, v, qo[:1], tables[:0], lens[:0])
    assert empty.shape == (0, 4, 64)


def test_paged_prefill_lse_of_a_row_without_keys(gen):
    # Causal with kv_len < q_len: the first rows see no key.
    hq, hkv, d, bs = 4, 2, 64, 16
    k, v = make_cache(8, bs, hkv, d, torch.float32, gen)
    tables = torch.arange(4, dtype=torch.int32).view(1, 4).cuda()
    lens = torch.tensor([3], dtype=torch.int32).cuda()
    qo = torch.tensor([0, 5], dtype=torch.int32).cuda()
    q = torch.randn(5, hq, d, generator=gen).cuda()
    lse = torch.empty(5, hq, device="cuda")
    out = ra.paged_prefill(q, k, v, qo, tables, lens, lse=lse)
    assert torch.all(out[:2] == 0) and torch.all(torch.isneginf(lse[:2]))
    ref, _ = prefill_reference(q, qo, k, v, tables, lens, True)
    check(out, ref, torch.float32, "paged_prefill kv_len < q_len")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("layout", ["nhd", "hnd", "combined"])
def test_kv_append_writes_the_slots(dtype, block_size, layout, gen):
    num_blocks, hkv, d, n = 12, 2, 64, 37
    shape = (num_blocks, block_size, hkv, d)
    if layout == "nhd":
        k_cache = torch.zeros(shape, dtype=dtype, device="cuda")
        v_cache = torch.zeros(shape, dtype=dtype, device="cuda")
    elif layout == "hnd":
        k_cache = torch.zeros(num_blocks, hkv, block_size, d, dtype=dtype,
                              device="cuda").transpose(1, 2)
        v_cache = torch.zeros(num_blocks, hkv, block_size, d, dtype=dtype,
                              device="cuda").transpose(1, 2)
    else:
        kv = torch.zeros(num_blocks, 2, block_size, hkv, d, dtype=dtype, device="cuda")
        k_cache, v_cache = kv[:, 0], kv[:, 1]
    num_slots = num_blocks * block_size
    n = min(n, num_slots - 2)
    slots = torch.randperm(num_slots, generator=gen)[:n].to(torch.int32)
    slots[3] = -1  # padding: not written
    # K and V as slices of one fused projection [n, (q + 2 kv) heads * d].
    fused = torch.randn(n, 6 * d, generator=gen).to(dtype).cuda()
    key = fused[:, 2 * d: 4 * d].view(n, hkv, d)
    value = fused[:, 4 * d:].view(n, hkv, d)
    ra.kv_append(key, value, k_cache, v_cache, slots.cuda())
    expect_k = torch.zeros(num_slots, hkv, d, dtype=dtype, device="cuda")
    expect_v = torch.zeros(num_slots, hkv, d, dtype=dtype, device="cuda")
    keep = (slots >= 0).cuda()
    idx = slots.cuda()[keep].long()
    expect_k[idx] = key[keep]
    expect_v[idx] = value[keep]
    assert torch.equal(k_cache.reshape(num_slots, hkv, d), expect_k)
    assert torch.equal(v_cache.reshape(num_slots, hkv, d), expect_v)


def test_kv_append_then_prefill_reads_back(gen):
    # An extend step: new rows appended after a cached prefix, then attention over both.
    dtype, bs, hq, hkv, d = torch.bfloat16, 16, 8, 2, 128
    k_cache, v_cache = make_cache(16, bs, hkv, d, dtype, gen)
    tables = torch.randperm(16, generator=gen)[:6].to(torch.int32).view(1, 6)
    cached, new = 50, 30
    t = torch.arange(cached, cached + new)
    slots = (tables[0, t // bs] * bs + t % bs).to(torch.int32).cuda()
    key = torch.randn(new, hkv, d, generator=gen).to(dtype).cuda()
    value = torch.randn(new, hkv, d, generator=gen).to(dtype).cuda()
    ra.kv_append(key, value, k_cache, v_cache, slots)
    q = torch.randn(new, hq, d, generator=gen).to(dtype).cuda()
    qo = torch.tensor([0, new], dtype=torch.int32).cuda()
    lens = torch.tensor([cached + new], dtype=torch.int32).cuda()
    out = ra.paged_prefill(q, k_cache, v_cache, qo, tables.cuda(), lens)
    ref, _ = prefill_reference(q, qo, k_cache, v_cache, tables.cuda(), lens, True)
    check(out, ref, dtype, "kv_append + paged_prefill")
    blk = tables[0, t // bs].long().cuda()
    assert torch.equal(k_cache[blk, (t % bs).cuda()], key)


def test_kv_append_fp8(gen):
    hkv, d, bs = 2, 64, 16
    k_cache = torch.zeros(4, bs, hkv, d, dtype=torch.float8_e4m3fn, device="cuda")
    v_cache = torch.zeros_like(k_cache)
    key = torch.randn(5, hkv, d, generator=gen).cuda()
    value = torch.randn(5, hkv, d, generator=gen).cuda()
    key[0, 0, 0] = float("nan")
    slots = torch.tensor([0, 1, 17, 40, -1], dtype=torch.int32).cuda()
    k_scale = torch.tensor([0.5, 2.0], device="cuda")
    v_scale = torch.tensor([1.0], device="cuda")
    count = torch.zeros(1, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="per kv head"):
        ra.kv_append(key, value, k_cache, v_cache, slots, k_scale=k_scale, v_scale=v_scale)
    ra.kv_append(key, value, k_cache, v_cache, slots, k_scale=k_scale, nonfinite_count=count)
    assert count.item() == 1
    flat_k = k_cache.view(-1, hkv, d).float()
    # stored = e4m3(x * (1 / scale)), the reciprocal taken once in float32.
    want = (key[1:4] * torch.reciprocal(k_scale)[None, :, None]).to(torch.float8_e4m3fn).float()
    assert torch.equal(flat_k[[1, 17, 40]], want)
    assert torch.equal(v_cache.view(-1, hkv, d).float()[[1, 17, 40]],
                       value[1:4].to(torch.float8_e4m3fn).float())
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        bf = torch.zeros(4, bs, hkv, d, device="cuda")
        ra.kv_append(key, value, bf, bf.clone(), slots, k_scale=k_scale)


@pytest.mark.parametrize("dtype", DTYPES + [torch.float8_e4m3fn])
def test_copy_blocks(dtype, gen):
    nb, bs, hkv, d = 10, 16, 2, 64
    k = torch.randn(nb, bs, hkv, d, generator=gen).to(dtype).cuda()
    v = torch.randn(nb, bs, hkv, d, generator=gen).to(dtype).cuda()
    k0, v0 = k.clone(), v.clone()
    ra.copy_blocks(k, v, [(1, 7), (2, 8)])
    assert torch.equal(k[7].float(), k0[1].float()) and torch.equal(v[8].float(), v0[2].float())
    assert torch.equal(k[:7].float(), k0[:7].float())
    # BlockCopy-style rows: only the first num_tokens offsets.
    ra.copy_blocks(k, v, torch.tensor([[3, 9, 5]], dtype=torch.int32, device="cuda"))
    assert torch.equal(k[9, :5].float(), k0[3, :5].float())
    assert torch.equal(k[9, 5:].float(), k0[9, 5:].float())


def test_copy_blocks_runs_a_fork():
    alloc = ra.BlockAllocator(16)
    sm = ra.SequenceManager(alloc, 4)
    seq = sm.create(6)  # one full block and a partial one
    fork = sm.fork(seq)
    k = torch.randn(16, 4, 1, 64, device="cuda")
    v = torch.randn(16, 4, 1, 64, device="cuda")
    k0 = k.clone()
    ra.copy_blocks(k, v, fork)
    for c in fork.copies:
        assert torch.equal(k[c.dst, : c.num_tokens], k0[c.src, : c.num_tokens])
