#!/usr/bin/env python3
"""Toy serving loop over radix_attention_torch: continuous batching of a few hundred requests
that share a handful of system prompts, through the radix tree (prefix cache), the batch
planner and the radix decode kernel.

The "model" is one attention layer with random weights (no positional encoding), so a token's
K/V depend on its id alone and prefill is a projection: enough to exercise everything a real
engine does around attention (prefix reuse, slot mapping, KV writes, block tables, planning,
decode, caching finished requests, eviction) and to time it.

Runs the same workload twice: with sharing (requests with the same system prompt reuse its
cached KV blocks and the planner reads them once per step) and without (every request in its
own cache namespace, planner sharing off). Prints the prefix hit rate, prefill tokens computed,
and the mean step / attention time of each run.

    python3 -m pip install --no-build-isolation ./bindings/torch
    python examples/python/serve_loop.py --requests 256 --prompts 4
"""
import argparse
import time

import torch

import radix_attention_torch as ra


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--prompts", type=int, default=4, help="distinct system prompts")
    p.add_argument("--prompt-len", type=int, default=1024, help="tokens of a system prompt")
    p.add_argument("--user-len", type=int, default=64, help="max tokens of a user suffix")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per request")
    p.add_argument("--max-batch", type=int, default=64, help="running requests at most")
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--num-blocks", type=int, default=8192)
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


class ToyLayer:
    """Embedding -> (q, k, v) -> attention -> output projection -> logits (tied embedding)."""

    def __init__(self, a, dtype, device):
        g = torch.Generator(device="cpu").manual_seed(a.seed)

        def w(*shape):
            return (torch.randn(*shape, generator=g) / shape[0] ** 0.5).to(dtype).to(device)

        self.a = a
        self.emb = torch.randn(a.vocab, a.hidden, generator=g).to(dtype).to(device)
        self.wq = w(a.hidden, a.q_heads * a.head_dim)
        self.wk = w(a.hidden, a.kv_heads * a.head_dim)
        self.wv = w(a.hidden, a.kv_heads * a.head_dim)
        self.wo = w(a.q_heads * a.head_dim, a.hidden)

    def kv(self, tokens):
        x = self.emb[tokens]
        shape = (len(tokens), self.a.kv_heads, self.a.head_dim)
        return (x @ self.wk).view(shape), (x @ self.wv).view(shape)

    def query(self, tokens):
        return (self.emb[tokens] @ self.wq).view(len(tokens), self.a.q_heads, self.a.head_dim)

    def next_tokens(self, tokens, attn):
        h = self.emb[tokens] + attn.view(len(tokens), -1) @ self.wo
        return (h @ self.emb.T).argmax(dim=-1)


def make_requests(a):
    g = torch.Generator().manual_seed(a.seed + 1)
    prompts = [torch.randint(0, a.vocab, (a.prompt_len,), generator=g).tolist()
               for _ in range(a.prompts)]
    reqs = []
    for i in range(a.requests):
        n = int(torch.randint(1, a.user_len + 1, (1,), generator=g))
        user = torch.randint(0, a.vocab, (n,), generator=g).tolist()
        reqs.append(prompts[i % a.prompts] + user)
    return reqs


def write_kv(cache, slots, k, v):
    k_cache, v_cache = cache
    k_cache.view(-1, *k_cache.shape[2:])[slots.long()] = k
    v_cache.view(-1, *v_cache.shape[2:])[slots.long()] = v


def run(a, layer, requests, cache, share, device):
    alloc = ra.BlockAllocator(a.num_blocks)
    tree = ra.RadixTree(alloc, a.block_size)
    sm = ra.SequenceManager(alloc, tree)
    dtype = cache[0].dtype
    planner = ra.BatchPlanner(a.q_heads, a.kv_heads, a.head_dim, dtype, enable_sharing=share)
    prefill_tokens = 0
    if share:
        # Cache each system prompt once up front (as engines pre-cache known system prompts): the
        # tree caches a sequence's blocks when it finishes, so without this the first wave of
        # requests, admitted together, would each compute the prompt.
        for prompt in sorted({tuple(r[: a.prompt_len]) for r in requests}):
            seq = sm.add(list(prompt))
            write_kv(cache, sm.take_slot_mapping([seq], device=device),
                     *layer.kv(torch.tensor(prompt, device=device)))
            sm.finish(seq)
            prefill_tokens += len(prompt)
    waiting = list(range(len(requests)))
    running = {}  # seq id -> [request id, tokens generated, last token]
    step_times, attn_times, paged_times, shared_segments = [], [], [], []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    total_start = time.perf_counter()
    while waiting or running:
        # Admit: reuse the cached prefix, compute K/V of the other prompt tokens only.
        while waiting and len(running) < a.max_batch:
            r = waiting.pop(0)
            tokens = requests[r]
            # Without sharing every request lives in its own namespace: nothing is reused.
            seq = sm.add(tokens, namespace=0 if share else r + 1)
            slots = sm.take_slot_mapping([seq], device=device)
            todo = torch.tensor(tokens[sm.cached_prefix_len(seq):], device=device)
            write_kv(cache, slots, *layer.kv(todo))
            prefill_tokens += len(todo)
            running[seq] = [r, 0, tokens[-1]]

        # One decode step for every running request; each may need a new block: make room by
        # evicting cached prefixes nobody uses (LRU) rather than failing with CapacityError.
        if alloc.num_free < len(running):
            tree.evict(len(running) - alloc.num_free)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        seqs = list(running)
        last = [running[s][2] for s in seqs]
        for s, tok in zip(seqs, last):
            sm.append_tokens(s, [tok])
        toks = torch.tensor(last, device=device)
        write_kv(cache, sm.take_slot_mapping(seqs, device=device), *layer.kv(toks))
        batch = planner.plan(sm, seqs)
        q = layer.query(toks)
        start.record()
        attn = ra.radix_decode(q, cache[0], cache[1], batch)
        end.record()
        nxt = layer.next_tokens(toks, attn).tolist()
        torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
        attn_times.append(start.elapsed_time(end))
        shared_segments.append(batch.stats["num_shared_segments"])
        if len(seqs) == a.max_batch and len(paged_times) < 8:
            # Same batch through plain paged decode (reads shared prefixes once per request).
            start.record()
            ref = ra.paged_decode(q, cache[0], cache[1], batch.block_tables, batch.context_lens)
            end.record()
            torch.cuda.synchronize()
            paged_times.append(start.elapsed_time(end))
            err = (ref.float() - attn.float()).abs().max() / ref.float().abs().max()
            assert err < 2e-2, f"radix_decode and paged_decode differ (relative {err:.3g})"

        for s, tok in zip(seqs, nxt):
            running[s][1] += 1
            running[s][2] = tok % a.vocab
            if running[s][1] >= a.new_tokens:
                sm.finish(s)  # its blocks stay cached for later requests
                del running[s]
    total = time.perf_counter() - total_start
    stats = tree.stats()
    tree.validate()

    def mean(xs):
        return sum(xs) / max(len(xs), 1)

    return dict(
        hit_rate=stats.hit_rate, prefill_tokens=prefill_tokens, steps=len(step_times),
        step_ms=1e3 * mean(step_times), attn_us=1e3 * mean(attn_times),
        paged_us=1e3 * mean(paged_times), shared_segments=mean(shared_segments),
        evicted=stats.evicted_blocks, total_s=total)


def main():
    a = parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("serve_loop.py needs a CUDA GPU")
    if not hasattr(ra.SequenceManager, "add"):
        raise SystemExit("this radix_attention build has no prefix-cache SequenceManager (add)")
    device = torch.device("cuda")
    dtype = getattr(torch, a.dtype)
    layer = ToyLayer(a, dtype, device)
    requests = make_requests(a)
    shape = (a.num_blocks, a.block_size, a.kv_heads, a.head_dim)
    cache = (torch.zeros(shape, dtype=dtype, device=device),
             torch.zeros(shape, dtype=dtype, device=device))
    print(f"{a.requests} requests over {a.prompts} system prompts of {a.prompt_len} tokens "
          f"(+ 1..{a.user_len} user tokens, {a.new_tokens} new), batch <= {a.max_batch}, "
          f"{a.q_heads} q / {a.kv_heads} kv heads x {a.head_dim}, {a.dtype}, "
          f"block {a.block_size}, {torch.cuda.get_device_name()}")
    run(a, layer, requests[: a.max_batch], cache, True, device)  # warm-up (allocations, JIT)
    results = {}
    for share in (True, False):
        results[share] = r = run(a, layer, requests, cache, share, device)
        print(f"sharing {'on ' if share else 'off'}: prefix hit rate {r['hit_rate']:6.1%}, "
              f"prefill tokens {r['prefill_tokens']:7d}, {r['steps']} steps, "
              f"step {r['step_ms']:.2f} ms, attention {r['attn_us']:.1f} us "
              f"(paged_decode on full batches {r['paged_us']:.1f} us), "
              f"shared segments/step {r['shared_segments']:.1f}, evicted blocks {r['evicted']}, "
              f"total {r['total_s']:.2f} s")
    on, off = results[True], results[False]
    print(f"sharing: {off['prefill_tokens'] / max(on['prefill_tokens'], 1):.1f}x fewer prefill "
          f"tokens, attention {off['attn_us'] / max(on['attn_us'], 1e-9):.2f}x faster")


if __name__ == "__main__":
    main()
