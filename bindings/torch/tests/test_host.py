"""Host-side classes: no GPU needed."""
import pytest

from extension_import import import_extension  # noqa: E402

torch = pytest.importorskip("torch")
ra = import_extension()


def test_extension_uses_the_shared_cxx_runtime():
    """A module with its own static copy of libstdc++ crashes on its first formatted message
    (two C++ runtimes in one process); setup.py links libstdc++.so.6 by soname to prevent it."""
    import shutil
    import subprocess

    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("ldd not available")
    so = ra._C.__file__
    needed = subprocess.run([ldd, so], capture_output=True, text=True, check=True).stdout
    assert "libstdc++.so.6" in needed, f"{so} does not link libstdc++ dynamically:\n{needed}"


def test_exception_hierarchy():
    assert issubclass(ra.InvalidArgument, ValueError)
    assert issubclass(ra.InvalidArgument, ra.Error)
    assert issubclass(ra.ArgumentTypeError, TypeError)
    assert issubclass(ra.CapacityError, MemoryError)
    assert issubclass(ra.StateError, RuntimeError)
    assert issubclass(ra.CudaError, ra.Error)
    assert issubclass(ra.Error, RuntimeError)


def test_block_allocator_counts_and_errors():
    a = ra.BlockAllocator(8)
    assert (a.num_blocks, a.num_free, a.num_used) == (8, 8, 0)
    blocks = a.allocate(3)
    assert blocks == [0, 1, 2]
    a.retain(1)
    assert a.ref_count(1) == 2
    a.release([1, 1])
    assert a.ref_count(1) == 0 and a.num_free == 6
    with pytest.raises(ra.CapacityError, match="exceeds"):
        a.allocate(7)
    assert a.num_free == 6  # strong guarantee
    with pytest.raises(ValueError, match="block"):
        a.release(5)  # free block: double release
    with pytest.raises(ValueError, match="num_blocks"):
        ra.BlockAllocator(0)


def test_radix_tree_match_insert_evict():
    a = ra.BlockAllocator(16)
    tree = ra.RadixTree(a, 4)
    prompt = list(range(100, 112))  # 3 blocks
    blocks = a.allocate(3)
    res = tree.insert(prompt, blocks)
    assert res.num_tokens == 12 and res.num_deduplicated == 0
    m = tree.match_prefix(prompt + [7, 8])
    assert m.num_tokens == 12 and m.blocks == blocks
    # Tensors are accepted as token lists.
    m2 = tree.match_prefix(torch.tensor(prompt[:9], dtype=torch.int64))
    assert m2.num_tokens == 8 and m2.blocks == blocks[:2]
    # Another namespace shares nothing.
    assert tree.match_prefix(prompt, namespace=7).num_tokens == 0
    stats = tree.stats()
    assert stats.cached_blocks == 3 and 0 < stats.hit_rate < 1
    tree.lock(m.node)
    assert tree.evict(3) == 0  # locked
    tree.unlock(m.node)
    assert tree.evict(3) == 3
    assert a.num_free == 16
    tree.validate()
    with pytest.raises(ValueError):
        tree.insert(prompt[:5], blocks[:1])  # 5 tokens != 1 block of 4
    with pytest.raises(TypeError):
        tree.match_prefix("not tokens")


def test_sequence_manager_tables_fork_slots():
    a = ra.BlockAllocator(32)
    sm = ra.SequenceManager(a, 4)
    s = sm.create(10)
    assert sm.context_len(s) == 10 and len(sm.blocks(s)) == 3
    slots = sm.take_slot_mapping([s])
    assert slots.dtype == torch.int32 and slots.shape == (10,)
    b = sm.blocks(s)
    assert slots.tolist() == [b[t // 4] * 4 + t % 4 for t in range(10)]
    f = sm.fork(s)
    assert len(f.copies) == 1 and f.copies[0].num_tokens == 2  # the partial last block
    assert sm.blocks(f.child)[:2] == b[:2]
    sm.append(f.child, 3)
    tables, lens = sm.block_tables([s, f.child])
    for device in ("cpu", torch.device("cpu"), None):  # strings and torch.device both work
        t2, _ = sm.block_tables([s, f.child], device=device)
        assert t2.device.type == "cpu" and torch.equal(t2, tables)
    with pytest.raises(TypeError, match="device"):
        sm.block_tables([s], device=object())
    with pytest.raises(ValueError, match="device"):
        sm.block_tables([s], device="not-a-device")
    assert tables.dtype == torch.int32 and tables.shape == (2, 4)
    assert lens.tolist() == [10, 13]
    assert tables[0, 3].item() == -1  # padding
    sm.release(s)
    with pytest.raises(ValueError, match="seq"):
        sm.context_len(s)
    with pytest.raises(ra.CapacityError):
        sm.create(1000)
    assert len(sm) == 1


def test_plan_batch_host_only_shares_prefix():
    block, n, shared_blocks = 16, 8, 16
    rows = []
    for i in range(n):
        rows.append(list(range(shared_blocks)) + [100 + i])
    tables = torch.tensor(rows, dtype=torch.int32)
    lens = torch.full((n,), shared_blocks * block + 5, dtype=torch.int32)
    plan, stats = ra.plan_batch(tables, lens, block)
    assert plan.num_queries == n
    assert stats["num_shared_segments"] >= 1
    plan.validate(lens.tolist())
    plan2, stats2 = ra.plan_batch(tables, lens, block, enable_sharing=False)
    assert stats2["num_shared_segments"] == 0
    assert plan2.num_partials >= n
    with pytest.raises(TypeError):
        ra.plan_batch(tables.long(), lens, block)
    with pytest.raises(ValueError):
        ra.plan_batch(tables, lens[:3], block)


@pytest.mark.skipif(not hasattr(ra.SequenceManager, "add"), reason="library without add()")
def test_sequence_manager_prefix_cache_add_finish():
    bs = 4
    a = ra.BlockAllocator(16)
    tree = ra.RadixTree(a, bs)
    sm = ra.SequenceManager(a, tree)
    assert sm.has_tree
    prompt = list(range(1, 14))  # 13 tokens: 3 full blocks + 1
    s1 = sm.add(prompt)
    assert sm.cached_prefix_len(s1) == 0
    assert sm.take_slot_mapping([s1]).numel() == 13
    sm.append_tokens(s1, [99, 98, 97])  # 16 tokens: 4 full blocks
    sm.finish(s1)
    assert tree.cached_blocks == 4
    # Same prompt: the 3 full prompt blocks come from the cache (the last token is computed).
    s2 = sm.add(torch.tensor(prompt))
    assert sm.cached_prefix_len(s2) == 12
    assert sm.take_slot_mapping([s2]).numel() == 1
    assert tree.peek_prefix(prompt) == (12, 0)  # its 3 blocks are locked by s2
    # Other namespace: nothing shared.
    s3 = sm.add(prompt, namespace=5)
    assert sm.cached_prefix_len(s3) == 0
    sm.abort(s3)
    with pytest.raises(ra.CapacityError):
        sm.add(list(range(200)))  # more than the pool, even after evicting
    tree.validate()
    sm.finish(s2)
    tree.validate()
    assert tree.stats().hit_rate > 0


@pytest.mark.parametrize("block_size", [1, 16])
def test_library_reference_matches_sdpa_reference_on_cpu(block_size):
    """The float64 CPU reference of the library and the SDPA reference of these tests agree
    (both run without a GPU), on random tables with an empty context."""
    from attention_reference import make_cache, random_batch, reference

    g = torch.Generator().manual_seed(3)
    num_blocks = 6 * (80 // block_size + 2) + 4
    k, v = make_cache(num_blocks, block_size, 2, 64, torch.bfloat16, g, device="cpu")
    tables, lens = random_batch(6, block_size, num_blocks, 80, g, shared_prefix=32, zero_len=True)
    q = torch.randn(6, 8, 64, generator=g).bfloat16()
    ra.validate_block_tables(tables, lens, num_blocks, block_size)
    out, lse = ra.reference_paged_decode(q, k, v, tables, lens)
    ref, ref_lse = reference(q, k, v, tables, lens)
    assert torch.allclose(out, ref, atol=1e-10, rtol=1e-9)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(ref_lse))
    finite = torch.isfinite(ref_lse)
    assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-10, rtol=1e-9)
    bad = tables.clone()
    bad[1, 0] = num_blocks
    with pytest.raises(ValueError, match=r"block_tables\[1\]\[0\]"):
        ra.validate_block_tables(bad, lens, num_blocks, block_size)


def test_tensor_parallel_heads():
    # 32 q / 8 kv heads at TP 4: 8 q and 2 kv heads per rank.
    assert ra.tensor_parallel_heads(32, 8, 4, 3) == ((24, 8), (6, 2))
    # 2 kv heads at TP 4: each replicated on two ranks.
    assert [ra.tensor_parallel_heads(32, 2, 4, r) for r in range(4)] == [
        ((0, 8), (0, 1)), ((8, 8), (0, 1)), ((16, 8), (1, 1)), ((24, 8), (1, 1))]
    assert ra.tensor_parallel_heads(8, 8, 1, 0) == ((0, 8), (0, 8))
    with pytest.raises(ValueError, match="tp_size = 3"):
        ra.tensor_parallel_heads(24, 8, 3, 0)
    with pytest.raises(ValueError, match="rank = 4"):
        ra.tensor_parallel_heads(32, 8, 4, 4)
    with pytest.raises(ra.InvalidArgument, match="multiple of tp_size"):
        ra.tensor_parallel_heads(12, 4, 8, 0)
