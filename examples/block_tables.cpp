// Host-only tour of the KV block pool and per-sequence block tables: two prompts are created,
// one is forked (parallel sampling), all three decode a few tokens, and each step exports the
// int32 arrays a serving engine copies to the GPU. Runs without a GPU; exits non-zero if any
// check fails.
//
//   ./example_block_tables

#include <radix_attention/cache/block_allocator.hpp>
#include <radix_attention/cache/sequence_manager.hpp>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <vector>

namespace ra = radix_attention;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (!ok) {
    std::printf("CHECK FAILED: %s\n", what);
    ++failures;
  }
}

void print_ints(const char* label, const std::vector<std::int32_t>& values) {
  std::printf("%s [", label);
  for (std::size_t i = 0; i < values.size(); ++i) std::printf(i ? " %d" : "%d", values[i]);
  std::printf("]\n");
}

void print_tables(const ra::BlockTables& t) {
  std::printf("block_tables [%d x %d] (padding %d):\n", t.num_seqs, t.max_blocks_per_seq,
              ra::kBlockTablePadding);
  for (std::int32_t s = 0; s < t.num_seqs; ++s) {
    std::printf("  row %d:", s);
    for (std::int32_t j = 0; j < t.max_blocks_per_seq; ++j) {
      std::printf(" %3d", t.block_tables[static_cast<std::size_t>(s * t.max_blocks_per_seq + j)]);
    }
    std::printf("   context_len %d\n", t.context_lens[static_cast<std::size_t>(s)]);
  }
}

int run() {
  constexpr std::int32_t kNumBlocks = 16;
  constexpr std::int32_t kBlockSize = 4;
  ra::BlockAllocator pool(kNumBlocks);
  ra::SequenceManager seqs(pool, kBlockSize);

  // Prefill: two prompts. Their slot mapping says where kv_append writes each prompt token.
  const ra::SequenceId a = seqs.create(10);
  const ra::SequenceId b = seqs.create(7);
  std::printf("created seq %lld (10 tokens) and seq %lld (7 tokens); %d of %d blocks used\n",
              static_cast<long long>(a), static_cast<long long>(b), pool.num_used(),
              pool.num_blocks());
  const std::vector<std::int32_t> prefill_slots = seqs.take_slot_mapping({a, b});
  print_ints("prefill slot_mapping", prefill_slots);
  check(prefill_slots.size() == 17, "one slot per prompt token");
  check(pool.num_used() == 5, "ceil(10/4) + ceil(7/4) blocks");

  // Fork: the child shares a's two full blocks and gets a copy of its partial third block.
  const ra::ForkResult fork = seqs.fork(a);
  const ra::SequenceId c = fork.child;
  std::printf("forked seq %lld -> seq %lld; copies to run on the GPU:\n", static_cast<long long>(a),
              static_cast<long long>(c));
  for (const ra::BlockCopy& copy : fork.copies) {
    std::printf("  block %d -> block %d, first %d tokens\n", copy.src, copy.dst, copy.num_tokens);
  }
  check(fork.copies.size() == 1 && fork.copies[0].num_tokens == 2, "partial block copied");
  check(pool.ref_count(seqs.blocks(a)[0]) == 2, "full blocks shared by parent and child");

  // Decode: each step appends one token per sequence, then exports the batch.
  const std::vector<ra::SequenceId> batch{a, b, c};
  for (int step = 0; step < 3; ++step) {
    for (ra::SequenceId s : batch) seqs.append(s);
    std::printf("decode step %d:\n", step);
    print_ints("  slot_mapping", seqs.take_slot_mapping(batch));
  }
  const ra::BlockTables tables = seqs.export_block_tables(batch);
  print_tables(tables);
  check(tables.context_lens == std::vector<std::int32_t>({13, 10, 13}), "context lengths");
  check(tables.block_tables[0] == tables.block_tables[2 * tables.max_blocks_per_seq],
        "a and c share their first block");

  // Running out of blocks is an error the caller handles, and it changes nothing.
  const std::int32_t used_before = pool.num_used();
  try {
    seqs.create(1000);
    check(false, "create(1000) must not fit a 16-block pool");
  } catch (const ra::CapacityError& e) {
    std::printf("expected: %s\n", e.what());
  }
  check(pool.num_used() == used_before, "a failed create leaves the pool unchanged");

  for (ra::SequenceId s : batch) seqs.release(s);
  std::printf("released all sequences; %d of %d blocks free\n", pool.num_free(), pool.num_blocks());
  check(pool.num_free() == kNumBlocks && seqs.num_sequences() == 0, "everything returned");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main() {
  try {
    const int rc = run();
    std::printf(rc == 0 ? "OK\n" : "FAILED\n");
    return rc;
  } catch (const std::exception& e) {
    std::printf("FAILED: unexpected exception: %s\n", e.what());
    return 1;
  }
}
