// SequenceManager (block tables without the prefix cache): every operation and every error, with
// "nothing changed" checks on the manager and the allocator after each failure.

#include "radix_attention/cache/sequence_manager.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cache/cache_test_support.hpp"

namespace ra = radix_attention;
using Blocks = std::vector<ra::BlockId>;
using Ints = std::vector<std::int32_t>;

namespace {

using cache_test::error_message;

// Everything observable about a manager and its allocator, for strong-guarantee checks.
struct State {
  std::int32_t num_free = 0;
  std::vector<std::int32_t> ref_counts;
  std::map<ra::SequenceId, std::pair<std::int32_t, Blocks>> seqs;
  bool operator==(const State& o) const {
    return num_free == o.num_free && ref_counts == o.ref_counts && seqs == o.seqs;
  }
};

State observe(const ra::BlockAllocator& a, const ra::SequenceManager& m,
              const std::vector<ra::SequenceId>& ids) {
  State s;
  s.num_free = a.num_free();
  for (ra::BlockId b = 0; b < a.num_blocks(); ++b) s.ref_counts.push_back(a.ref_count(b));
  for (ra::SequenceId id : ids) {
    if (m.contains(id)) s.seqs[id] = {m.context_len(id), m.blocks(id)};
  }
  return s;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST(SequenceManager, ConstructorChecksBlockSize) {
  ra::BlockAllocator a(8);
  EXPECT_THROW(ra::SequenceManager(a, 0), ra::InvalidArgument);
  EXPECT_THROW(ra::SequenceManager(a, -4), ra::InvalidArgument);
  EXPECT_TRUE(contains(error_message([&] { ra::SequenceManager m(a, 0); }), "block_size = 0"));
  // 8 blocks * 2^30 tokens do not fit int32 slot indices.
  EXPECT_THROW(ra::SequenceManager(a, 1 << 30), ra::InvalidArgument);
  ra::SequenceManager m(a, 16);
  EXPECT_EQ(m.block_size(), 16);
  EXPECT_EQ(&m.allocator(), &a);
  EXPECT_EQ(m.num_sequences(), 0u);
}

TEST(SequenceManager, CreateAllocatesCeilBlocks) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s0 = m.create(0);
  const ra::SequenceId s1 = m.create(4);
  const ra::SequenceId s2 = m.create(9);
  EXPECT_NE(s0, s1);
  EXPECT_NE(s1, s2);
  EXPECT_EQ(m.num_sequences(), 3u);
  EXPECT_TRUE(m.blocks(s0).empty());
  EXPECT_EQ(m.blocks(s1).size(), 1u);
  EXPECT_EQ(m.blocks(s2).size(), 3u);
  EXPECT_EQ(m.context_len(s0), 0);
  EXPECT_EQ(m.context_len(s2), 9);
  EXPECT_EQ(a.num_used(), 4);
  for (ra::BlockId b : m.blocks(s2)) EXPECT_EQ(a.ref_count(b), 1);
}

TEST(SequenceManager, CreateErrorsChangeNothing) {
  ra::BlockAllocator a(4);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s = m.create(10);  // 3 blocks, 1 free
  const State before = observe(a, m, {s});
  EXPECT_THROW(m.create(-1), ra::InvalidArgument);
  EXPECT_TRUE(contains(error_message([&] { m.create(-1); }), "num_tokens = -1"));
  EXPECT_THROW(m.create(5), ra::CapacityError);  // needs 2 blocks
  EXPECT_EQ(observe(a, m, {s}), before);
  EXPECT_EQ(m.num_sequences(), 1u);
  EXPECT_NO_THROW(m.create(4));  // exactly the last block
  EXPECT_EQ(a.num_free(), 0);
}

TEST(SequenceManager, IdsAreNeverReused) {
  ra::BlockAllocator a(4);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s0 = m.create(1);
  m.release(s0);
  const ra::SequenceId s1 = m.create(1);
  EXPECT_NE(s0, s1);
  EXPECT_FALSE(m.contains(s0));
  EXPECT_TRUE(m.contains(s1));
}

TEST(SequenceManager, AppendAllocatesOnlyWhenTheLastBlockFills) {
  ra::BlockAllocator a(8);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s = m.create(3);
  m.append(s);  // 4: fills block 0
  EXPECT_EQ(m.blocks(s).size(), 1u);
  m.append(s);  // 5: new block
  EXPECT_EQ(m.blocks(s).size(), 2u);
  m.append(s, 7);  // 12: 3 blocks
  EXPECT_EQ(m.blocks(s).size(), 3u);
  EXPECT_EQ(m.context_len(s), 12);
  m.append(s, 0);
  EXPECT_EQ(m.context_len(s), 12);
  const ra::SequenceId e = m.create(0);
  m.append(e, 1);
  EXPECT_EQ(m.blocks(e).size(), 1u);
  EXPECT_EQ(a.num_used(), 4);
}

TEST(SequenceManager, AppendErrorsChangeNothing) {
  ra::BlockAllocator a(3);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s = m.create(6);  // 2 blocks, 1 free
  const State before = observe(a, m, {s});
  EXPECT_THROW(m.append(s, 7), ra::CapacityError);  // 13 tokens need 4 blocks
  EXPECT_THROW(m.append(s, -1), ra::InvalidArgument);
  EXPECT_THROW(m.append(s + 100), ra::InvalidArgument);
  EXPECT_THROW(m.append(s, std::numeric_limits<std::int32_t>::max()), ra::InvalidArgument);
  EXPECT_EQ(observe(a, m, {s}), before);
  const std::string msg = error_message([&] { m.append(s + 100); });
  EXPECT_TRUE(contains(msg, "seq = " + std::to_string(s + 100))) << msg;
  m.append(s, 6);  // exactly 12 = 3 blocks
  EXPECT_EQ(a.num_free(), 0);
  m.append(s, 0);  // no block needed even with the pool empty
  EXPECT_THROW(m.append(s, 1), ra::CapacityError);
}

TEST(SequenceManager, AppendRefusesToWriteIntoASharedPartialBlock) {
  ra::BlockAllocator a(4);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s = m.create(2);
  a.retain(m.blocks(s)[0]);  // someone else reads the partial block
  const State before = observe(a, m, {s});
  EXPECT_THROW(m.append(s), ra::StateError);
  EXPECT_EQ(observe(a, m, {s}), before);
  a.release(m.blocks(s)[0]);
  EXPECT_NO_THROW(m.append(s));
}

TEST(SequenceManager, ForkSharesFullBlocksAndCopiesThePartialOne) {
  ra::BlockAllocator a(8);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId p = m.create(10);  // blocks 0 1 full, 2 holds 2 tokens
  const Blocks pb = m.blocks(p);
  const ra::ForkResult f = m.fork(p);
  EXPECT_TRUE(m.contains(f.child));
  EXPECT_EQ(m.context_len(f.child), 10);
  const Blocks& cb = m.blocks(f.child);
  ASSERT_EQ(cb.size(), 3u);
  EXPECT_EQ(cb[0], pb[0]);
  EXPECT_EQ(cb[1], pb[1]);
  EXPECT_NE(cb[2], pb[2]);
  EXPECT_EQ(a.ref_count(pb[0]), 2);
  EXPECT_EQ(a.ref_count(pb[1]), 2);
  EXPECT_EQ(a.ref_count(pb[2]), 1);
  EXPECT_EQ(a.ref_count(cb[2]), 1);
  ASSERT_EQ(f.copies.size(), 1u);
  EXPECT_EQ(f.copies[0].src, pb[2]);
  EXPECT_EQ(f.copies[0].dst, cb[2]);
  EXPECT_EQ(f.copies[0].num_tokens, 2);
  EXPECT_EQ(m.blocks(p), pb);  // the parent is unchanged
  // Both grow independently: the parent's partial block is still its own.
  m.append(p, 2);
  m.append(f.child, 3);
  EXPECT_EQ(m.blocks(p).size(), 3u);
  EXPECT_EQ(m.blocks(f.child).size(), 4u);
  // Releasing the parent leaves the shared blocks to the child.
  m.release(p);
  EXPECT_EQ(a.ref_count(pb[0]), 1);
  EXPECT_EQ(a.ref_count(pb[2]), 0);
  m.release(f.child);
  EXPECT_EQ(a.num_used(), 0);
}

TEST(SequenceManager, ForkAtABlockBoundaryCopiesNothing) {
  ra::BlockAllocator a(4);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId p = m.create(8);
  const ra::ForkResult f = m.fork(p);
  EXPECT_TRUE(f.copies.empty());
  EXPECT_EQ(m.blocks(f.child), m.blocks(p));
  EXPECT_EQ(a.num_used(), 2);
  // Appending to either allocates a private block: the shared full ones are never written.
  m.append(f.child);
  EXPECT_EQ(m.blocks(f.child).size(), 3u);
  EXPECT_EQ(a.ref_count(m.blocks(f.child)[2]), 1);
  const ra::ForkResult e = m.fork(m.create(0));
  EXPECT_TRUE(e.copies.empty());
  EXPECT_TRUE(m.blocks(e.child).empty());
}

TEST(SequenceManager, ForkErrorsChangeNothing) {
  ra::BlockAllocator a(3);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId p = m.create(10);  // 3 blocks, pool empty
  const State before = observe(a, m, {p});
  EXPECT_THROW(m.fork(p), ra::CapacityError);
  EXPECT_EQ(observe(a, m, {p}), before);
  EXPECT_EQ(m.num_sequences(), 1u);
  EXPECT_THROW(m.fork(p + 1), ra::InvalidArgument);
  EXPECT_TRUE(contains(error_message([&] { m.fork(p + 1); }), "seq = " + std::to_string(p + 1)));
  EXPECT_EQ(observe(a, m, {p}), before);
}

TEST(SequenceManager, ReleaseReturnsBlocksAndInvalidatesTheId) {
  ra::BlockAllocator a(4);
  ra::SequenceManager m(a, 2);
  const ra::SequenceId s = m.create(5);
  m.release(s);
  EXPECT_EQ(a.num_free(), 4);
  EXPECT_FALSE(m.contains(s));
  EXPECT_EQ(m.num_sequences(), 0u);
  const State before = observe(a, m, {s});
  EXPECT_THROW(m.release(s), ra::InvalidArgument);  // double release
  EXPECT_EQ(observe(a, m, {s}), before);
  const std::string msg = error_message([&] { m.release(s); });
  EXPECT_TRUE(contains(msg, "seq = " + std::to_string(s))) << msg;
  EXPECT_THROW(m.context_len(s), ra::InvalidArgument);
  EXPECT_THROW(m.blocks(s), ra::InvalidArgument);
  EXPECT_THROW(m.append(s), ra::InvalidArgument);
  EXPECT_THROW(m.fork(s), ra::InvalidArgument);
  EXPECT_THROW(m.export_block_tables({s}), ra::InvalidArgument);
  EXPECT_THROW(m.take_slot_mapping({s}), ra::InvalidArgument);
  EXPECT_THROW(m.release(-1), ra::InvalidArgument);
}

TEST(SequenceManager, DestructorReleasesLiveSequences) {
  ra::BlockAllocator a(8);
  {
    ra::SequenceManager m(a, 4);
    const ra::SequenceId s = m.create(9);
    m.fork(s);
    EXPECT_EQ(a.num_used(), 4);
  }
  EXPECT_EQ(a.num_used(), 0);
}

TEST(SequenceManager, ExportBlockTablesPadsRows) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s0 = m.create(9);  // blocks 0 1 2
  const ra::SequenceId s1 = m.create(1);  // block 3
  const ra::SequenceId s2 = m.create(0);
  const ra::BlockTables t = m.export_block_tables({s1, s0, s2, s1});
  EXPECT_EQ(t.num_seqs, 4);
  EXPECT_EQ(t.max_blocks_per_seq, 3);
  const std::int32_t P = ra::kBlockTablePadding;
  EXPECT_EQ(t.block_tables, (Ints{3, P, P, 0, 1, 2, P, P, P, 3, P, P}));
  EXPECT_EQ(t.context_lens, (Ints{1, 9, 0, 1}));
  const ra::BlockTables w = m.export_block_tables({s0}, 5);
  EXPECT_EQ(w.max_blocks_per_seq, 5);
  EXPECT_EQ(w.block_tables, (Ints{0, 1, 2, P, P}));
  const ra::BlockTables empty_rows = m.export_block_tables({s2});
  EXPECT_EQ(empty_rows.max_blocks_per_seq, 1);
  EXPECT_EQ(empty_rows.block_tables, (Ints{P}));
  const ra::BlockTables none = m.export_block_tables({});
  EXPECT_EQ(none.num_seqs, 0);
  EXPECT_TRUE(none.block_tables.empty());
  EXPECT_TRUE(none.context_lens.empty());
}

TEST(SequenceManager, ExportBlockTablesErrors) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s = m.create(9);
  EXPECT_THROW(m.export_block_tables({s}, 2), ra::InvalidArgument);  // needs 3
  const std::string msg = error_message([&] { m.export_block_tables({s}, 2); });
  EXPECT_TRUE(contains(msg, "max_blocks_per_seq = 2")) << msg;
  EXPECT_TRUE(contains(msg, "seq = " + std::to_string(s))) << msg;
  EXPECT_THROW(m.export_block_tables({s}, -1), ra::InvalidArgument);
  EXPECT_THROW(m.export_block_tables({s, 77}), ra::InvalidArgument);
  EXPECT_TRUE(contains(error_message([&] { m.export_block_tables({s, 77}); }), "seq = 77"));
  EXPECT_NO_THROW(m.export_block_tables({s}, 3));
}

TEST(SequenceManager, SlotMappingCoversNewTokensOnce) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s0 = m.create(6);  // blocks 0 1
  const ra::SequenceId s1 = m.create(2);  // block 2
  EXPECT_EQ(m.take_slot_mapping({s1, s0}), (Ints{8, 9, 0, 1, 2, 3, 4, 5}));
  EXPECT_TRUE(m.take_slot_mapping({s0, s1}).empty());
  m.append(s0, 3);  // tokens 6 7 in block 1, token 8 in a new block 3
  m.append(s1);     // token 2 of block 2
  EXPECT_EQ(m.take_slot_mapping({s0}), (Ints{6, 7, 12}));
  EXPECT_EQ(m.take_slot_mapping({s1}), (Ints{10}));
  EXPECT_TRUE(m.take_slot_mapping({}).empty());
}

TEST(SequenceManager, SlotMappingOfAForkStartsAfterTheFork) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId p = m.create(5);  // blocks 0 1
  m.take_slot_mapping({p});
  const ra::ForkResult f = m.fork(p);  // child: 0, 2
  EXPECT_TRUE(m.take_slot_mapping({f.child}).empty());
  m.append(f.child, 2);
  m.append(p);
  EXPECT_EQ(m.take_slot_mapping({f.child, p}), (Ints{9, 10, 5}));
}

TEST(SequenceManager, SlotMappingErrorsTakeNothing) {
  ra::BlockAllocator a(16);
  ra::SequenceManager m(a, 4);
  const ra::SequenceId s0 = m.create(2);
  const ra::SequenceId s1 = m.create(1);
  EXPECT_THROW(m.take_slot_mapping({s0, 99}), ra::InvalidArgument);
  EXPECT_THROW(m.take_slot_mapping({s0, s1, s0}), ra::InvalidArgument);
  const std::string msg = error_message([&] { m.take_slot_mapping({s1, s0, s1}); });
  EXPECT_TRUE(contains(msg, "seq = " + std::to_string(s1))) << msg;
  // Nothing was taken by the failed calls.
  EXPECT_EQ(m.take_slot_mapping({s0, s1}), (Ints{0, 1, 4}));
}

TEST(SequenceManager, BlockSizeOneIsTokenLevelPaging) {
  ra::BlockAllocator a(8);
  ra::SequenceManager m(a, 1);
  const ra::SequenceId s = m.create(3);
  const ra::ForkResult f = m.fork(s);
  EXPECT_TRUE(f.copies.empty());  // every block is full
  m.append(f.child, 2);
  EXPECT_EQ(m.blocks(f.child).size(), 5u);
  EXPECT_EQ(a.num_used(), 5);
  EXPECT_EQ(m.take_slot_mapping({s, f.child}), (Ints{0, 1, 2, 3, 4}));
}
