"""The transformers adapter's mapping (block tables from read/write indices, slot mapping,
qo_indptr, decode-only dispatch) on the CPU, without a GPU or the built extension: the kernels
are replaced by float64 torch stand-ins with the bindings' signatures, and generate_batch with
paged|radix_attention must give paged|sdpa's greedy tokens. The GPU test of the real kernels is
test_transformers.py."""
import importlib.util
import math
import os
import sys
import types

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ADAPTER = os.path.join(os.path.dirname(__file__), "..", "radix_attention_torch", "transformers.py")
VOCAB = 300


class StandIns(types.SimpleNamespace):
    """kv_append / paged_prefill / paged_decode in torch, checking what the adapter passes."""

    def __init__(self):
        super().__init__(calls={"kv_append": 0, "paged_prefill": 0, "paged_decode": 0})

    def kv_append(self, key, value, key_cache, value_cache, slot_mapping, **kw):
        self.calls["kv_append"] += 1
        assert slot_mapping.dtype == torch.int32 and slot_mapping.shape == key.shape[:1]
        # The binding reads one pair of (token, head) strides for both (size-1 dims ignored).
        def strides(t):
            return [st for st, n in zip(t.stride(), t.shape) if n > 1]
        assert strides(key) == strides(value) and (key.shape[-1] == 1 or key.stride(-1) == 1)
        heads, dim = key_cache.shape[2:]
        keep = slot_mapping >= 0
        slots = slot_mapping[keep].long()
        assert slots.unique().numel() == slots.numel(), "a slot twice"
        assert slots.numel() == 0 or int(slots.max()) < key_cache.shape[0] * key_cache.shape[1]
        key_cache.view(-1, heads, dim)[slots] = key[keep]
        value_cache.view(-1, heads, dim)[slots] = value[keep]

    @staticmethod
    def _attend(q, k_cache, v_cache, row, kv_len, scale):
        bs, q_len = k_cache.shape[1], q.shape[0]
        t = torch.arange(kv_len)
        blocks = row[t // bs].long()
        g = q.shape[1] // k_cache.shape[2]
        k = k_cache[blocks, t % bs].double().repeat_interleave(g, dim=1)
        v = v_cache[blocks, t % bs].double().repeat_interleave(g, dim=1)
        s = torch.einsum("qhd,nhd->hqn", q.double(), k) * scale
        limit = kv_len - q_len + torch.arange(q_len) + 1
        s = s.masked_fill((t[None, :] >= limit[:, None])[None], -math.inf)
        return torch.einsum("hqn,nhd->qhd", torch.softmax(s, dim=-1), v)

    def paged_prefill(self, query, key_cache, value_cache, qo_indptr, block_tables, context_lens,
                      *, max_q_len, out, scale, causal, max_context_len, **kw):
        self.calls["paged_prefill"] += 1
        assert causal and qo_indptr.dtype == block_tables.dtype == context_lens.dtype == torch.int32
        qo, lens = qo_indptr.tolist(), context_lens.tolist()
        assert qo[0] == 0 and qo[-1] <= query.shape[0] and len(lens) == len(qo) - 1
        assert max_q_len >= max([b - a for a, b in zip(qo, qo[1:])] + [0])
        assert max_context_len >= max(lens + [0])
        assert max_context_len <= block_tables.shape[1] * key_cache.shape[1]
        for s, n in enumerate(lens):
            a, b = qo[s], qo[s + 1]
            if b > a:
                out[a:b] = self._attend(query[a:b], key_cache, value_cache, block_tables[s], n,
                                        scale).to(out.dtype)
        return out

    def paged_decode(self, query, key_cache, value_cache, block_tables, context_lens, *, out,
                     scale, max_context_len, **kw):
        self.calls["paged_decode"] += 1
        assert query.is_contiguous() and query.shape[0] == context_lens.shape[0]
        lens = context_lens.tolist()
        assert max_context_len >= max(lens)
        for s, n in enumerate(lens):
            out[s:s + 1] = self._attend(query[s:s + 1], key_cache, value_cache, block_tables[s],
                                        n, scale).to(out.dtype)
        return out


@pytest.fixture
def adapter(monkeypatch):
    """radix_attention_torch/transformers.py loaded with the stand-ins as its extension."""
    standins = StandIns()
    monkeypatch.setitem(sys.modules, "radix_attention_torch", standins)
    spec = importlib.util.spec_from_file_location("radix_attention_torch_transformers", ADAPTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delitem(sys.modules, "radix_attention_torch")
    assert module._ra is standins
    # The stand-ins have no planner: decode-only steps take paged_decode here (radix_decode, the
    # default, is checked against paged|sdpa on the GPU in test_transformers.py).
    module.configure(radix_decode=False)
    # transformers sizes its cache from free GPU memory; on the CPU it finds none.
    from transformers.generation.continuous_batching import cache as cb_cache
    monkeypatch.setattr(cb_cache.PagedAttentionMemoryHandler, "get_available_memory",
                        lambda self: 1 << 30)
    return module, standins


def tiny_llama(q_heads, kv_heads, seed=0):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=q_heads * 64, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=q_heads, num_key_value_heads=kv_heads, head_dim=64,
        max_position_embeddings=1024, initializer_range=0.1)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg).eval()


def generate(model, implementation, inputs, sharing):
    model.set_attn_implementation(implementation)
    gen = transformers.GenerationConfig(max_new_tokens=8, do_sample=False, eos_token_id=-1,
                                        pad_token_id=0)
    cb = transformers.ContinuousBatchingConfig(block_size=16, num_blocks=64, max_batch_tokens=48,
                                               allow_block_sharing=sharing)
    results = model.generate_batch(inputs, generation_config=gen, continuous_batching_config=cb)
    assert not [r.error for r in results.values() if r.error is not None]
    return [list(r.generated_tokens) for r in results.values()]


@pytest.mark.parametrize("q_heads,kv_heads", [(4, 2), (7, 1)])
@pytest.mark.parametrize("sharing", [True, False])
def test_adapter_gives_paged_sdpa_tokens(adapter, q_heads, kv_heads, sharing):
    module, standins = adapter
    module.register()
    model = tiny_llama(q_heads, kv_heads)
    g = torch.Generator().manual_seed(1)
    shared = torch.randint(0, VOCAB, (37,), generator=g).tolist()
    inputs = [shared + torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in (3, 9, 1, 14)]
    expected = generate(model, "paged|sdpa", inputs, sharing)
    got = generate(model, module.IMPLEMENTATION, inputs, sharing)
    assert got == expected
    # max_batch_tokens 48 < the prompts: chunked prefill and mixed steps, then decode steps.
    assert standins.calls["paged_prefill"] > 0 and standins.calls["paged_decode"] > 0


def test_adapter_refuses_without_a_paged_cache(adapter):
    module, _ = adapter
    model = tiny_llama(4, 2)
    q = torch.zeros(1, 4, 3, 64)
    k = torch.zeros(1, 2, 3, 64)
    with pytest.raises(ValueError, match="paged attention cache"):
        module.paged_attention_forward(model.model.layers[0].self_attn, q, k, k, None)
