#!/usr/bin/env python3
"""Tensor-parallel decode attention over radix_attention_torch: one process per GPU, NCCL.

A random-init attention layer (hidden -> fused QKV projection -> radix decode -> output
projection) runs one decode step of shared-prefix batches, sharded by heads as tensor-parallel
engines shard it:
  - rank r of t holds the QKV columns of its query heads (num_q_heads / t) and of its kv heads
    (num_kv_heads / t, or one kv head replicated on t / num_kv_heads ranks when t exceeds
    num_kv_heads; tensor_parallel_heads), its kv heads of the paged KV cache, and the rows of
    the output projection that belong to its query heads;
  - every rank plans the same batch (same block tables, a BatchPlanner of the rank's head
    counts), so every rank runs the same radix plan;
  - q is read in place from the fused projection (a row-strided view), the new token's K/V
    are appended to the rank's cache from the same projection, radix_decode attends, the
    output projection gives a partial hidden state and an all-reduce sums the ranks'.
Rank 0 then runs the unsharded layer on its GPU alone and checks the all-reduced result
against it, and the step is timed on 1 GPU (unsharded) and on the t GPUs.

Batches (the shared-prefix cases of docs/architecture.md's targets): s4 = 64 requests x
(4096 shared + 128 own tokens), s5 = 256 x (2048 + 64), s6 = 32 x (16384 + 512).

    python3 -m pip install --no-build-isolation ./bindings/torch
    torchrun --standalone --nproc_per_node=2 examples/tensor_parallel.py
    python3 examples/tensor_parallel.py          # one process: world size 1

NCCL's environment (e.g. NCCL_NVLS_ENABLE) is left as the machine sets it.
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist

import radix_attention_torch as ra

BATCHES = {  # name: (requests, shared prefix tokens, own tokens per request)
    "s4": (64, 4096, 128),
    "s5": (256, 2048, 64),
    "s6": (32, 16384, 512),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batches", default="s4,s5,s6", help="comma-separated: " + ",".join(BATCHES))
    p.add_argument("--q-heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    p.add_argument("--iters", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--tol", type=float, default=2e-2,
                   help="largest relative L2 difference of the t-GPU result from the 1-GPU one")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def init_distributed():
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; a plain `python` run is world size 1."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl")
    return dist.get_rank(), dist.get_world_size(), device


class Weights:
    """The full layer, drawn from one seed on every rank (CPU generator: identical everywhere).
    w_qkv columns are [q heads | k heads | v heads] x head_dim; w_o rows are q heads x head_dim."""

    def __init__(self, a, dtype):
        g = torch.Generator().manual_seed(a.seed)
        qkv = (a.q_heads + 2 * a.kv_heads) * a.head_dim
        self.w_qkv = (torch.randn(a.hidden, qkv, generator=g) / math.sqrt(a.hidden)).to(dtype)
        self.w_o = (torch.randn(a.q_heads * a.head_dim, a.hidden, generator=g) /
                    math.sqrt(a.q_heads * a.head_dim)).to(dtype)


class Layer:
    """The attention layer of one rank: heads (q_first, q_count), (kv_first, kv_count)."""

    def __init__(self, a, w, heads, device):
        (q0, qn), (k0, kn) = heads
        d = a.head_dim
        kv_base = a.q_heads * d
        cols = [w.w_qkv[:, q0 * d:(q0 + qn) * d],
                w.w_qkv[:, kv_base + k0 * d:kv_base + (k0 + kn) * d],
                w.w_qkv[:, kv_base + (a.kv_heads + k0) * d:kv_base + (a.kv_heads + k0 + kn) * d]]
        self.w_qkv = torch.cat(cols, dim=1).to(device)  # [hidden, (qn + 2 kn) * d]
        self.w_o = w.w_o[q0 * d:(q0 + qn) * d].contiguous().to(device)
        self.qn, self.kn, self.d = qn, kn, d

    def step(self, x, k_cache, v_cache, slots, batch, out):
        """One decode step: returns this rank's partial hidden state [B, hidden]."""
        b, d, qn, kn = x.shape[0], self.d, self.qn, self.kn
        qkv = x @ self.w_qkv
        q = qkv[:, :qn * d].view(b, qn, d)  # row-strided: read in place
        k_new = qkv[:, qn * d:(qn + kn) * d].view(b, kn, d)
        v_new = qkv[:, (qn + kn) * d:].view(b, kn, d)
        ra.kv_append(k_new, v_new, k_cache, v_cache, slots)
        ra.radix_decode(q, k_cache, v_cache, batch, out=out)
        return out.view(b, qn * d) @ self.w_o


def make_tables(requests, shared, own, bs, g):
    """Block tables of `requests` rows sharing `shared` tokens (whole blocks) plus `own` tokens
    and the new one each; blocks of the shared prefix and of every request placed at random."""
    shared_blocks = shared // bs
    own_blocks = (own + 1 + bs - 1) // bs
    num_blocks = shared_blocks + requests * own_blocks + 1
    perm = torch.randperm(num_blocks, generator=g).to(torch.int32)
    prefix = perm[:shared_blocks]
    rows = [torch.cat([prefix, perm[shared_blocks + r * own_blocks:
                                    shared_blocks + (r + 1) * own_blocks]])
            for r in range(requests)]
    tables = torch.stack(rows)
    lens = torch.full((requests,), shared_blocks * bs + own + 1, dtype=torch.int32)
    last = lens.long() - 1  # the new token's position
    slots = tables[torch.arange(requests), last // bs].long() * bs + last % bs
    return tables, lens, slots.to(torch.int32), num_blocks


def time_steps(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) * 1e3 / iters  # us per step


def run_batch(a, name, w, rank, world, device, dtype):
    requests, shared, own = BATCHES[name]
    bs, d = a.block_size, a.head_dim
    g = torch.Generator().manual_seed(a.seed + 1)
    tables, lens, slots, num_blocks = make_tables(requests, shared, own, bs, g)
    x = (torch.randn(requests, a.hidden, generator=g)).to(dtype).to(device)
    # The full cache from one CUDA generator seed: every rank draws the same values.
    cg = torch.Generator(device=device).manual_seed(a.seed + 2)
    full_k = torch.randn(num_blocks, bs, a.kv_heads, d, generator=cg, device=device).to(dtype)
    full_v = torch.randn(num_blocks, bs, a.kv_heads, d, generator=cg, device=device).to(dtype)
    tables_d, lens_d, slots_d = tables.to(device), lens.to(device), slots.to(device)

    # This rank's shard: its heads, its own copy of its kv heads of the cache.
    heads = ra.tensor_parallel_heads(a.q_heads, a.kv_heads, world, rank)
    (q0, qn), (k0, kn) = heads
    layer = Layer(a, w, heads, device)
    k_cache = full_k[:, :, k0:k0 + kn].contiguous()
    v_cache = full_v[:, :, k0:k0 + kn].contiguous()
    planner = ra.BatchPlanner(qn, kn, d, dtype)
    batch = planner.plan_tables(tables_d, lens_d, bs)  # the same plan on every rank
    out = torch.empty(requests, qn, d, dtype=dtype, device=device)

    def sharded_step():
        y = layer.step(x, k_cache, v_cache, slots_d, batch, out)
        dist.all_reduce(y)
        return y

    y_tp = sharded_step().float()
    t_tp = time_steps(sharded_step, a.warmup, a.iters)
    q = (x @ layer.w_qkv)[:, :qn * d].view(requests, qn, d)
    t_attn = time_steps(lambda: ra.radix_decode(q, k_cache, v_cache, batch, out=out), a.warmup,
                        a.iters)
    t_tp_max = torch.tensor([t_tp], device=device)
    dist.all_reduce(t_tp_max, op=dist.ReduceOp.MAX)

    # Rank 0: the unsharded layer on one GPU (the other ranks wait), as the reference.
    if rank == 0:
        whole = Layer(a, w, ((0, a.q_heads), (0, a.kv_heads)), device)
        wk, wv = full_k.clone(), full_v.clone()
        wbatch = ra.BatchPlanner(a.q_heads, a.kv_heads, d, dtype).plan_tables(tables_d, lens_d, bs)
        wout = torch.empty(requests, a.q_heads, d, dtype=dtype, device=device)
        y_1 = whole.step(x, wk, wv, slots_d, wbatch, wout).float()
        t_1 = time_steps(lambda: whole.step(x, wk, wv, slots_d, wbatch, wout), a.warmup, a.iters)
        rel = ((y_tp - y_1).norm() / y_1.norm()).item()
        ok = math.isfinite(rel) and rel <= a.tol
        unique_kv = (shared + requests * (own + 1)) * a.kv_heads * d * 2 * x.element_size()
        print(f"{name}: {requests} x ({shared} + {own}), {unique_kv / 2**20:.0f} MiB of K/V: "
              f"1 GPU {t_1:8.1f} us/step | {world} GPU(s) {t_tp_max.item():8.1f} us/step "
              f"(speed-up {t_1 / t_tp_max.item():.2f}x; attention alone on rank 0: "
              f"{t_attn:.1f} us) | rel diff vs 1 GPU {rel:.2e} {'ok' if ok else 'FAILED'}",
              flush=True)
    else:
        ok = True
    dist.barrier()
    flag = torch.tensor([0 if ok else 1], device=device)
    dist.all_reduce(flag)
    return flag.item() == 0


def main():
    a = parse_args()
    rank, world, device = init_distributed()
    dtype = getattr(torch, a.dtype)
    if rank == 0:
        print(f"tensor parallel decode: {world} rank(s), {a.q_heads} q / {a.kv_heads} kv heads, "
              f"head_dim {a.head_dim}, hidden {a.hidden}, block {a.block_size}, {a.dtype}; "
              f"rank heads {ra.tensor_parallel_heads(a.q_heads, a.kv_heads, world, 0)}",
              flush=True)
    w = Weights(a, dtype)
    started = time.time()
    ok = True
    for name in a.batches.split(","):
        if name not in BATCHES:
            raise SystemExit(f"unknown batch {name!r}: choose from {', '.join(BATCHES)}")
        ok = run_batch(a, name, w, rank, world, device, dtype) and ok
    if rank == 0:
        print(f"{'passed' if ok else 'FAILED'} in {time.time() - started:.1f} s", flush=True)
    dist.destroy_process_group()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
