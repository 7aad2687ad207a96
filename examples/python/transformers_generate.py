#!/usr/bin/env python3
"""transformers' continuous batching (model.generate_batch) with paged|sdpa and with
paged|radix_attention, side by side, on a random-init Llama.

Workload (defaults): a 1.1 B-parameter Llama (16 layers, 16 q / 4 kv heads, head_dim 128,
random weights), 64 requests whose prompts are a 2048-token shared prefix plus 64 tokens of
their own, 128 greedy tokens each; --long: an 8192-token shared prefix and 256 requests.
Block sharing (transformers' prefix caching) is on unless --no-sharing.

For each backend it runs a short warm-up generation, then the workload, and prints: tokens/s
(generated tokens / wall time of generate_batch), time to first token (from a request's
creation to its first token; mean and p50 / p90), and the attention time per decode step (CUDA
events around every attention call, cache write included, summed over the layers of a step;
mean over decode-only steps), plus how many requests generated the same tokens under both
backends. With --dtype float32 the tokens must be equal (exit status 1 if not); with bfloat16
the rounding of two different kernels may flip a near-tie and the sequences then diverge.

    python3 -m pip install --no-build-isolation ./bindings/torch
    python3 -m pip install "transformers>=5.17"
    python3 examples/python/transformers_generate.py                 # 64 x (2048 + 64)
    python3 examples/python/transformers_generate.py --long          # 256 x (8192 + 64)
    python3 examples/python/transformers_generate.py --dtype float32 --requests 16 --check
"""
import argparse
import gc
import statistics
import sys
import time

import torch

try:
    import transformers
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_paged import sdpa_attention_paged_forward
except ImportError:  # pragma: no cover
    sys.exit("this example needs transformers >= 5.17 (python3 -m pip install transformers)")

import radix_attention_torch.transformers as rat

BACKENDS = {"sdpa": "paged|sdpa", "radix": rat.IMPLEMENTATION}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--long", action="store_true",
                   help="8192-token shared prefix, 256 requests (unless given explicitly)")
    p.add_argument("--requests", type=int, default=None, help="default 64 (256 with --long)")
    p.add_argument("--shared-len", type=int, default=None,
                   help="tokens of the shared prefix, default 2048 (8192 with --long)")
    p.add_argument("--own-len", type=int, default=64, help="tokens of each request's own suffix")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--backends", default="sdpa,radix", help="comma list of: sdpa, radix")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--no-sharing", action="store_true", help="allow_block_sharing=False")
    p.add_argument("--block-size", type=int, default=256, help="transformers' default: 256")
    p.add_argument("--num-blocks", type=int, default=None, help="default: sized by transformers")
    p.add_argument("--max-batch-tokens", type=int, default=None)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--q-heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--init-range", type=float, default=0.02, help="initializer_range")
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the backends' tokens differ (meant for --dtype float32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.requests = a.requests or (256 if a.long else 64)
    a.shared_len = a.shared_len or (8192 if a.long else 2048)
    return a


class AttentionTimer:
    """Wraps a registered attention function with CUDA events; groups the calls of one forward
    (one step) by the identity of the write-index tensors transformers hands every layer."""

    def __init__(self, fn):
        self.fn = fn
        self.enabled = False
        self.steps = []  # [(decode_only, [(start, end), ...])]
        self._key = None

    def __call__(self, module, query, key, value, attention_mask, **kwargs):
        if not self.enabled:
            return self.fn(module, query, key, value, attention_mask, **kwargs)
        step_key = kwargs.get("write_index")
        if step_key is None or step_key is not self._key:
            self._key = step_key
            decode = kwargs.get("max_seqlen_q") == 1
            self.steps.append((decode, []))
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        out = self.fn(module, query, key, value, attention_mask, **kwargs)
        end.record()
        self.steps[-1][1].append((start, end))
        return out

    def reset(self):
        self.steps, self._key = [], None

    def summary(self):
        torch.cuda.synchronize()
        per_step = [(d, sum(s.elapsed_time(e) for s, e in ev)) for d, ev in self.steps]
        decode = [ms for d, ms in per_step if d]
        total = sum(ms for _, ms in per_step)
        return {"steps": len(per_step), "decode_steps": len(decode),
                "decode_ms": statistics.mean(decode) if decode else float("nan"),
                "total_ms": total}


def make_model(a, dtype):
    cfg = transformers.LlamaConfig(
        vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.q_heads, num_key_value_heads=a.kv_heads,
        head_dim=a.hidden // a.q_heads, max_position_embeddings=max(4096, 2 * (
            a.shared_len + a.own_len + a.new_tokens)), initializer_range=a.init_range)
    torch.manual_seed(a.seed)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def make_prompts(a):
    g = torch.Generator().manual_seed(a.seed + 1)
    shared = torch.randint(0, a.vocab, (a.shared_len,), generator=g).tolist()
    return [shared + torch.randint(0, a.vocab, (a.own_len,), generator=g).tolist()
            for _ in range(a.requests)]


def run(model, implementation, prompts, a, timer, progress):
    if implementation == rat.IMPLEMENTATION:
        rat.check_config(model.config)  # (use_radix_attention would re-register, untimed)
    model.set_attn_implementation(implementation)
    gen = transformers.GenerationConfig(max_new_tokens=a.new_tokens, do_sample=False,
                                        eos_token_id=-1, pad_token_id=0)
    cb_kwargs = {"block_size": a.block_size, "allow_block_sharing": not a.no_sharing}
    if a.num_blocks:
        cb_kwargs["num_blocks"] = a.num_blocks
    if a.max_batch_tokens:
        cb_kwargs["max_batch_tokens"] = a.max_batch_tokens
    cb = transformers.ContinuousBatchingConfig(**cb_kwargs)
    # transformers sizes its cache from the free memory: give back what the last run's cache
    # left in torch's caching allocator, so both backends get the same number of blocks.
    gc.collect()
    torch.cuda.empty_cache()
    timer.reset()
    timer.enabled = True
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = model.generate_batch(prompts, generation_config=gen, continuous_batching_config=cb,
                                   record_timestamps=True, progress_bar=progress)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    timer.enabled = False
    outs = list(results.values())
    errors = [r.error for r in outs if r.error is not None]
    if errors:
        raise RuntimeError(f"{implementation}: {len(errors)} requests failed: {errors[0]}")
    ttft = [r.timestamps[0] - r.created_time for r in outs if r.timestamps]
    tokens = sum(len(r.generated_tokens) for r in outs)
    return {"wall": wall, "tokens": tokens, "tok_s": tokens / wall, "ttft": ttft,
            "generated": [list(r.generated_tokens) for r in outs], **timer.summary()}


def main():
    a = parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dtype = getattr(torch, a.dtype)
    names = [b.strip() for b in a.backends.split(",") if b.strip()]
    for n in names:
        if n not in BACKENDS:
            sys.exit(f"unknown backend {n!r}: choose from {sorted(BACKENDS)}")
    rat.register()
    timers = {}
    for n in names:
        impl = BACKENDS[n]
        fn = sdpa_attention_paged_forward if n == "sdpa" else rat.paged_attention_forward
        timers[n] = AttentionTimer(fn)
        AttentionInterface.register(impl, timers[n])

    model = make_model(a, dtype)
    params = sum(p.numel() for p in model.parameters())
    prompts = make_prompts(a)
    print(f"{a.requests} requests x ({a.shared_len} shared + {a.own_len} own) prompt tokens, "
          f"{a.new_tokens} greedy tokens; Llama {params / 1e9:.2f} B params ({a.layers} layers, "
          f"{a.q_heads} q / {a.kv_heads} kv heads x {a.hidden // a.q_heads}), {a.dtype}, "
          f"block {a.block_size}, sharing {'off' if a.no_sharing else 'on'}, "
          f"{torch.cuda.get_device_name()}, transformers {transformers.__version__}")

    stats = {}
    for n in names:
        warm = make_prompts(argparse.Namespace(**{**vars(a), "requests": 4, "shared_len": 64,
                                                  "own_len": 16}))
        run(model, BACKENDS[n], warm, argparse.Namespace(**{**vars(a), "new_tokens": 4}),
            timers[n], progress=False)
        stats[n] = run(model, BACKENDS[n], prompts, a, timers[n], progress=not a.no_progress)
        s = stats[n]
        ttft = sorted(s["ttft"])
        p = (lambda q: ttft[min(len(ttft) - 1, int(q * len(ttft)))]) if ttft else (lambda q: 0)
        print(f"{BACKENDS[n]:>22}: {s['tok_s']:8.1f} tokens/s ({s['tokens']} tokens in "
              f"{s['wall']:.2f} s), TTFT mean {statistics.mean(ttft) if ttft else 0:.2f} s "
              f"(p50 {p(0.5):.2f}, p90 {p(0.9):.2f}), attention per decode step "
              f"{s['decode_ms']:.3f} ms over {s['decode_steps']} decode-only steps "
              f"({s['steps']} steps, attention {s['total_ms'] / 1e3:.2f} s in all)")

    if "sdpa" in stats and "radix" in stats:
        s, r = stats["sdpa"], stats["radix"]
        same = sum(x == y for x, y in zip(s["generated"], r["generated"]))
        first = next((i for i, (x, y) in enumerate(zip(s["generated"], r["generated"]))
                      if x != y), None)
        print(f"radix vs sdpa: tokens/s x{r['tok_s'] / s['tok_s']:.2f}, attention per decode "
              f"step x{s['decode_ms'] / r['decode_ms']:.2f} lower, TTFT mean "
              f"x{statistics.mean(s['ttft']) / max(statistics.mean(r['ttft']), 1e-9):.2f} lower; "
              f"same tokens for {same}/{len(s['generated'])} requests"
              + ("" if first is None else f" (first difference: request {first})"))
        if a.check and same != len(s["generated"]):
            sys.exit(1)


if __name__ == "__main__":
    main()
