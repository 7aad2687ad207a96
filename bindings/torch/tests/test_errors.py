"""Every tensor argument is checked before launch, with the argument named in the message."""
import pytest

from extension_import import import_extension  # noqa: E402

torch = pytest.importorskip("torch")
ra = import_extension()

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 8, 64, generator=g).half().cuda()
    k = torch.randn(16, 4, 2, 64, generator=g).half().cuda()
    v = torch.randn(16, 4, 2, 64, generator=g).half().cuda()
    tables = torch.arange(16, dtype=torch.int32).reshape(2, 8).cuda()
    lens = torch.tensor([5, 32], dtype=torch.int32).cuda()
    return q, k, v, tables, lens


def call(q, k, v, tables, lens, **kw):
    return ra.paged_decode(q, k, v, tables, lens, **kw)


@pytest.mark.parametrize(
    "mutate,exc,name",
    [
        (lambda a: a.update(q=a["q"].cpu()), ValueError, "query"),
        (lambda a: a.update(q=a["q"].float()), TypeError, "key_cache"),
        (lambda a: a.update(q=a["q"][:, :, :32]), ValueError, "query"),  # non-contiguous
        (lambda a: a.update(q=a["q"].reshape(2, 512)), ValueError, "query"),
        (lambda a: a.update(v=a["v"][:8]), ValueError, "value_cache"),
        (lambda a: a.update(k=a["k"].float()), TypeError, "key_cache"),
        (lambda a: a.update(tables=a["tables"].long()), TypeError, "block_tables"),
        (lambda a: a.update(tables=a["tables"][:1]), ValueError, "block_tables"),
        (lambda a: a.update(tables=a["tables"].t()), ValueError, "block_tables"),
        (lambda a: a.update(lens=a["lens"].cpu()), ValueError, "context_lens"),
        (lambda a: a.update(lens=a["lens"].float()), TypeError, "context_lens"),
        (lambda a: a.update(out=torch.empty(2, 8, 32, dtype=torch.half, device="cuda")),
         ValueError, "out"),
        (lambda a: a.update(out=torch.empty(2, 8, 64, dtype=torch.float, device="cuda")),
         TypeError, "out"),
        (lambda a: a.update(lse=torch.empty(2, 8, dtype=torch.half, device="cuda")),
         TypeError, "lse"),
        (lambda a: a.update(scale=-1.0), ValueError, "scale"),
        (lambda a: a.update(num_splits=1000), ValueError, "num_splits"),
    ],
)
def test_paged_decode_rejects(inputs, mutate, exc, name):
    q, k, v, tables, lens = inputs
    args = dict(q=q, k=k, v=v, tables=tables, lens=lens)
    mutate(args)
    kw = {key: args.pop(key) for key in ("out", "lse", "scale", "num_splits") if key in args}
    with pytest.raises(exc, match=name):
        call(args["q"], args["k"], args["v"], args["tables"], args["lens"], **kw)


def test_library_errors_become_python_errors(inputs):
    q, k, v, tables, lens = inputs
    # head_dim 32 is not instantiated: the library's InvalidArgument, a ValueError.
    with pytest.raises(ra.InvalidArgument, match="head_dim"):
        ra.paged_decode(q[..., :32].contiguous(), k[..., :32].contiguous(),
                        v[..., :32].contiguous(), tables, lens)
    # 8 q heads over 3 kv heads.
    with pytest.raises(ValueError, match="num_kv_heads"):
        ra.paged_decode(q, k[:, :, :1].expand(16, 4, 3, 64).contiguous(),
                        v[:, :, :1].expand(16, 4, 3, 64).contiguous(), tables, lens)


def test_stale_batch_is_a_state_error(inputs):
    q, k, v, tables, lens = inputs
    planner = ra.BatchPlanner(8, 2, 64, torch.half, num_plan_buffers=1)
    first = planner.plan_tables(tables, lens, 4)
    second = planner.plan_tables(tables, lens, 4)
    assert not first.valid and second.valid
    with pytest.raises(ra.StateError, match="plan"):
        ra.radix_decode(q, k, v, first)
    ra.radix_decode(q, k, v, second)
    with pytest.raises(ValueError, match="block_size"):
        ra.radix_attention(torch.empty_like(q), q, k, v, second, 8)
    with pytest.raises(TypeError, match="plan_or_tables"):
        ra.radix_attention(torch.empty_like(q), q, k, v, object(), 4)
    # Heads differ from the planner's.
    with pytest.raises(ValueError, match="BatchPlanner"):
        ra.radix_decode(q[:, :4].contiguous(), k, v, second)
