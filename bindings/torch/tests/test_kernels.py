"""Kernels against torch.nn.functional.scaled_dot_product_attention on gathered KV."""
import math

import pytest

from extension_import import import_extension  # noqa: E402

torch = pytest.importorskip("torch")
ra = import_extension()
from attention_reference import assert_close, make_cache, random_batch, reference  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


CASES = [
    # (dtype, block_size, q_heads, kv_heads, head_dim)
    (dt, bs, hq, hkv, d)
    for dt in DTYPES
    for bs in (1, 16)
    for (hq, hkv, d) in ((8, 2, 128), (4, 4, 64))
]


@pytest.mark.parametrize("dtype,block_size,hq,hkv,head_dim", CASES)
def test_paged_decode_matches_sdpa(dtype, block_size, hq, hkv, head_dim, gen):
    num_seqs, max_ctx = 5, 300
    num_blocks = num_seqs * (max_ctx // block_size + 2) + 8
    k, v = make_cache(num_blocks, block_size, hkv, head_dim, dtype, gen)
    tables, lens = random_batch(num_seqs, block_size, num_blocks, max_ctx, gen, zero_len=True)
    q = torch.randn(num_seqs, hq, head_dim, generator=gen).to(dtype).cuda()
    tables, lens = tables.cuda(), lens.cuda()
    lse = torch.empty(num_seqs, hq, dtype=torch.float32, device="cuda")
    out = torch.full_like(q, float("nan"))  # every element must be written
    res = ra.paged_decode(q, k, v, tables, lens, out=out, lse=lse)
    assert res.data_ptr() == out.data_ptr()
    ref, ref_lse = reference(q, k, v, tables, lens)
    assert_close(out, ref, dtype, "paged_decode")
    assert torch.all(out[0] == 0) and torch.all(torch.isneginf(lse[0]))  # empty context
    assert torch.allclose(lse[1:].double(), ref_lse[1:], atol=1e-3, rtol=1e-3)
    # Forced split-KV, and an explicit scale.
    out2 = ra.paged_decode(q, k, v, tables, lens, num_splits=3, scale=0.05)
    ref2, _ = reference(q, k, v, tables, lens, scale=0.05)
    assert_close(out2, ref2, dtype, "paged_decode split")


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype,block_size,hq,hkv,head_dim", CASES)
def test_radix_decode_matches_sdpa(dtype, block_size, hq, hkv, head_dim, shared, gen):
    num_seqs, max_ctx = 12, 200
    prefix = 512 if shared else 0
    num_blocks = num_seqs * ((max_ctx + prefix) // block_size + 2) + 8
    k, v = make_cache(num_blocks, block_size, hkv, head_dim, dtype, gen)
    tables, lens = random_batch(num_seqs, block_size, num_blocks, max_ctx, gen,
                                shared_prefix=prefix, groups=2, zero_len=not shared)
    q = torch.randn(num_seqs, hq, head_dim, generator=gen).to(dtype).cuda()
    planner = ra.BatchPlanner(hq, hkv, head_dim, dtype, merge_launch_bytes=0.0)
    batch = planner.plan_tables(tables, lens, block_size)
    assert batch.valid and batch.num_queries == num_seqs
    if shared:
        assert batch.stats["num_shared_segments"] >= 1, batch.stats
    out = torch.full_like(q, float("nan"))
    lse = torch.empty(num_seqs, hq, dtype=torch.float32, device="cuda")
    ra.radix_decode(q, k, v, batch, out=out, lse=lse)
    ref, ref_lse = reference(q, k, v, batch.block_tables, batch.context_lens)
    assert_close(out, ref, dtype, f"radix_decode shared={shared}")
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(lse.double()[finite], ref_lse[finite], atol=1e-3, rtol=1e-3)
    # The convenience call takes the same batch, or the raw tables (paged path).
    out2 = torch.empty_like(q)
    ra.radix_attention(out2, q, k, v, batch, block_size)
    assert_close(out2, ref, dtype, "radix_attention(batch)")
    out3 = torch.empty_like(q)
    ra.radix_attention(out3, q, k, v, (batch.block_tables, batch.context_lens), block_size)
    assert_close(out3, ref, dtype, "radix_attention(tables)")


def test_sequence_manager_fork_sharing_end_to_end(gen):
    """Requests forked from one prompt share its full blocks; the planner finds them and the
    radix kernel matches SDPA; the side stream is honoured."""
    bs, hq, hkv, d, dtype = 16, 8, 2, 128, torch.bfloat16
    alloc = ra.BlockAllocator(512)
    sm = ra.SequenceManager(alloc, bs)
    root = sm.create(1000)
    seqs = []
    for i in range(16):
        f = sm.fork(root)
        sm.append(f.child, 1 + i * 3)
        seqs.append(f.child)
    k, v = make_cache(alloc.num_blocks, bs, hkv, d, dtype, gen)
    q = torch.randn(len(seqs), hq, d, generator=gen).to(dtype).cuda()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # q, k, v were made on the default stream
    with torch.cuda.stream(stream):
        planner = ra.BatchPlanner(hq, hkv, d, dtype)
        batch = planner.plan(sm, seqs)
        out = ra.radix_decode(q, k, v, batch)
        fixed = ra.radix_decode(q, k, v, batch, fixed_grid=True)  # persistent-grid variant
    stream.synchronize()
    ref, _ = reference(q, k, v, batch.block_tables, batch.context_lens)
    assert_close(fixed, ref, dtype, "fixed grid")
    assert batch.stats["num_shared_segments"] >= 1
    assert batch.seqs == seqs
    assert_close(out, ref, dtype, "fork sharing")


def test_merge_states_matches_formula(gen):
    P, H, D = 7, 4, 64
    po = torch.randn(P, H, D, generator=gen).cuda()
    pl = torch.randn(P, H, generator=gen).cuda()
    pl[3] = -math.inf  # an empty partial is ignored
    indptr = torch.tensor([0, 3, 3, 7], dtype=torch.int32).cuda()
    ids = torch.tensor([0, 4, 2, 1, 3, 5, 6], dtype=torch.int32).cuda()
    lse = torch.empty(3, H, device="cuda")
    out = ra.merge_states(po, pl, indptr, ids, lse_out=lse, out_dtype=torch.float16)
    assert out.dtype == torch.float16 and out.shape == (3, H, D)
    for qi, (b, e) in enumerate([(0, 3), (3, 3), (3, 7)]):
        sel = ids[b:e].long()
        if e == b:
            assert torch.all(out[qi] == 0) and torch.all(torch.isneginf(lse[qi]))
            continue
        m = torch.logsumexp(pl[sel], dim=0)
        w = torch.exp(pl[sel] - m)[..., None]
        expect = (w * po[sel]).sum(0)
        torch.testing.assert_close(out[qi].float(), expect, atol=1e-2, rtol=1e-2)
        torch.testing.assert_close(lse[qi], m, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hq,hkv,tp", [(8, 2, 2), (8, 2, 4), (16, 8, 8)])
def test_decode_on_head_slices_of_fused_qkv_and_hnd_cache(dtype, hq, hkv, tp, gen):
    """Tensor-parallel ranks run one after another on one GPU: each rank's query heads are a
    slice of a fused QKV projection, its kv heads a slice of an HND cache, its output rows a
    slice of the full output (nothing else written); together they equal the unsharded call."""
    bs, d, num_seqs = 16, 64, 6
    num_blocks = num_seqs * (300 // bs + 2) + 8
    k, v = make_cache(num_blocks, bs, hkv, d, dtype, gen)
    # HND storage [blocks, heads, block, dim], seen as [blocks, block, heads, dim].
    k_hnd = k.transpose(1, 2).contiguous().transpose(1, 2)
    v_hnd = v.transpose(1, 2).contiguous().transpose(1, 2)
    tables, lens = random_batch(num_seqs, bs, num_blocks, 150, gen, shared_prefix=128, groups=2)
    tables, lens = tables.cuda(), lens.cuda()
    fused = torch.randn(num_seqs, (hq + 2 * hkv) * d, generator=gen).to(dtype).cuda()
    q = fused[:, : hq * d].view(num_seqs, hq, d)
    assert not q.is_contiguous()
    ref, _ = reference(q, k, v, tables, lens)
    wide_paged = torch.full((num_seqs, hq * d + 64), float("nan"), dtype=dtype, device="cuda")
    wide_radix = torch.full_like(wide_paged, float("nan"))
    out_paged = wide_paged[:, : hq * d].view(num_seqs, hq, d)
    out_radix = wide_radix[:, : hq * d].view(num_seqs, hq, d)
    for rank in range(tp):
        (q0, qn), (k0, kn) = ra.tensor_parallel_heads(hq, hkv, tp, rank)
        assert qn == hq // tp and kn == max(1, hkv // tp)
        q_r = q[:, q0:q0 + qn]
        k_r, v_r = k_hnd[:, :, k0:k0 + kn], v_hnd[:, :, k0:k0 + kn]
        ra.paged_decode(q_r, k_r, v_r, tables, lens, out=out_paged[:, q0:q0 + qn])
        batch = ra.BatchPlanner(qn, kn, d, dtype).plan_tables(tables, lens, bs)
        ra.radix_decode(q_r, k_r, v_r, batch, out=out_radix[:, q0:q0 + qn])
    assert_close(out_paged, ref, dtype, f"paged_decode on tp {tp} head slices")
    assert_close(out_radix, ref, dtype, f"radix_decode on tp {tp} head slices")
    assert torch.all(torch.isnan(wide_paged[:, hq * d:])), "paged_decode wrote past its rows"
    assert torch.all(torch.isnan(wide_radix[:, hq * d:])), "radix_decode wrote past its rows"
    whole = ra.paged_decode(q, k, v, tables, lens)
    assert_close(out_paged, whole.double(), dtype, "head slices vs the unsharded call")
