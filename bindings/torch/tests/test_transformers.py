"""paged|radix_attention through transformers' continuous batching (generate_batch): with
float32 weights the greedy tokens equal paged|sdpa's, for a small random-init Llama and a
Qwen-like GQA config (28 q / 4 kv heads), block sharing on and off, prefill chunked into mixed
prefill + decode steps."""
import pytest

from extension_import import import_extension  # noqa: E402

torch = pytest.importorskip("torch")
ra = import_extension()
transformers = pytest.importorskip("transformers")
rat = pytest.importorskip("radix_attention_torch.transformers")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

VOCAB = 1000


def llama(seed=0):
    cfg = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=8, num_key_value_heads=2, head_dim=64, max_position_embeddings=2048,
        initializer_range=0.1)  # wider than the default 0.02: decisive greedy margins
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(cfg)


def qwen_like(seed=0):
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=28 * 64, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=2048,
        initializer_range=0.05)
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(cfg)


def prompts(num, shared_len, own_max, seed=1):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, VOCAB, (shared_len,), generator=g).tolist()
    own = torch.randint(1, own_max + 1, (num,), generator=g).tolist()
    return [shared + torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in own]


def generate(model, implementation, inputs, *, sharing, new_tokens=16, **cb_kwargs):
    if implementation == rat.IMPLEMENTATION:
        rat.use_radix_attention(model)
    else:
        model.set_attn_implementation(implementation)
    gen = transformers.GenerationConfig(max_new_tokens=new_tokens, do_sample=False,
                                        eos_token_id=-1, pad_token_id=0)
    cb = transformers.ContinuousBatchingConfig(
        block_size=16, num_blocks=256, max_batch_tokens=128, allow_block_sharing=sharing,
        **cb_kwargs)
    results = model.generate_batch(inputs, generation_config=gen, continuous_batching_config=cb)
    assert len(results) == len(inputs)
    errors = [r.error for r in results.values() if r.error is not None]
    assert not errors, errors
    return [list(r.generated_tokens) for r in results.values()]


@pytest.mark.parametrize("make_model", [llama, qwen_like], ids=["llama", "qwen-like-28q-4kv"])
@pytest.mark.parametrize("sharing", [True, False])
def test_greedy_tokens_equal_paged_sdpa(make_model, sharing):
    model = make_model().to("cuda", torch.float32).eval()
    # 10 requests sharing a 100-token prompt (6 full blocks of 16): with max_batch_tokens 128
    # prefill is chunked, steps mix prefill chunks and decode rows, and shared blocks are
    # reused when sharing is on.
    inputs = prompts(10, 100, 30)
    expected = generate(model, "paged|sdpa", inputs, sharing=sharing)
    got = generate(model, rat.IMPLEMENTATION, inputs, sharing=sharing)
    assert got == expected


def test_cuda_graph_padding_path():
    # Padded batches (CUDA graphs): empty requests and trash write slots in the indices.
    model = llama(seed=3).to("cuda", torch.float32).eval()
    inputs = prompts(6, 40, 20, seed=4)
    expected = generate(model, "paged|sdpa", inputs, sharing=True, new_tokens=8)
    got = generate(model, rat.IMPLEMENTATION, inputs, sharing=True, new_tokens=8,
                   use_cuda_graph=True)
    assert got == expected


def test_unsupported_configs_are_refused():
    cfg = transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
        sliding_window=64, max_window_layers=0)
    with pytest.raises(NotImplementedError, match="sliding"):
        rat.check_config(cfg)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=96 * 2, num_attention_heads=2,
                                   num_key_value_heads=1, num_hidden_layers=1)
    with pytest.raises(NotImplementedError, match="head_dim = 96"):
        rat.check_config(cfg)


def test_registered_name():
    assert rat.register() == "paged|radix_attention"
    assert "paged|radix_attention" in transformers.AttentionInterface()
