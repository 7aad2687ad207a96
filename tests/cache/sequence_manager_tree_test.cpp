// SequenceManager with a RadixTree: add (match + lock + allocate, evicting when short), append
// with token ids, finish (insert into the cache), abort, fork, prefix queries, and the errors,
// with "nothing changed" checks on the manager, the tree and the allocator.
#include "radix_attention/cache/sequence_manager.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "cache/cache_test_support.hpp"

namespace ra = radix_attention;
using ra::BlockId;
using ra::NodeHandle;
using ra::SequenceId;
using ra::TokenId;

namespace {

using cache_test::concat;
using cache_test::iota_tokens;

// Everything observable: allocator ref counts, tree counters and LRU times of every node, and
// the sequences' lengths and blocks.
std::string observe(const ra::BlockAllocator& a, const ra::RadixTree& t,
                    const ra::SequenceManager& m, const std::vector<SequenceId>& ids) {
  std::ostringstream out;
  for (BlockId b = 0; b < a.num_blocks(); ++b) out << a.ref_count(b) << ' ';
  const ra::RadixTreeStats s = t.stats();
  out << "| nodes " << s.num_nodes << " cached " << s.cached_blocks << " locked " << s.locked_blocks
      << " hits " << s.hit_tokens << " misses " << s.miss_tokens << " |";
  std::vector<NodeHandle> stack{t.root()};
  std::vector<std::string> nodes;
  while (!stack.empty()) {
    const NodeHandle h = stack.back();
    stack.pop_back();
    std::ostringstream n;
    n << t.token_range(h).begin << '-' << t.token_range(h).end << '@' << t.last_access(h) << 'L'
      << t.lock_count(h);
    nodes.push_back(n.str());
    for (NodeHandle c : t.children(h)) stack.push_back(c);
  }
  std::sort(nodes.begin(), nodes.end());
  for (const auto& n : nodes) out << n << ' ';
  for (SequenceId id : ids) {
    if (!m.contains(id)) continue;
    out << "| seq " << id << " len " << m.context_len(id) << " blocks";
    for (BlockId b : m.blocks(id)) out << ' ' << b;
  }
  return out.str();
}

class SequenceManagerTreeTest : public ::testing::TestWithParam<std::int32_t> {
 protected:
  std::int32_t bs() const { return GetParam(); }
  std::size_t n(std::int32_t blocks) const { return static_cast<std::size_t>(blocks * bs()); }
  ra::BlockAllocator alloc{64};
  ra::RadixTree tree{alloc, GetParam()};
  ra::SequenceManager mgr{alloc, tree};
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, SequenceManagerTreeTest, ::testing::Values(1, 4, 16));

TEST_P(SequenceManagerTreeTest, ConstructionAndModes) {
  EXPECT_EQ(mgr.block_size(), bs());
  EXPECT_EQ(mgr.tree(), &tree);
  ra::BlockAllocator other(8);
  EXPECT_THROW(ra::SequenceManager(other, tree), ra::InvalidArgument);
  ra::SequenceManager plain(alloc, bs());
  EXPECT_THROW(plain.add(iota_tokens(3)), ra::StateError);
  const SequenceId s = plain.create(2 * bs());
  EXPECT_EQ(plain.prefix_node(s), NodeHandle{});
  EXPECT_EQ(plain.cached_prefix_len(s), 0);
  plain.finish(s);  // without a tree: a release
  EXPECT_EQ(alloc.num_free(), alloc.num_blocks());
}

TEST_P(SequenceManagerTreeTest, AddFinishAddReusesTheCachedPrefix) {
  const auto prompt = iota_tokens(n(3) + 1);  // 3 blocks and one token
  const SequenceId a = mgr.add(prompt);
  EXPECT_EQ(mgr.cached_prefix_len(a), 0);
  EXPECT_EQ(mgr.prefix_node(a), tree.root());
  EXPECT_EQ(mgr.context_len(a), static_cast<std::int32_t>(prompt.size()));
  EXPECT_EQ(mgr.blocks(a).size(), 4u);
  EXPECT_EQ(mgr.take_slot_mapping({a}).size(), prompt.size());
  mgr.append_tokens(a, iota_tokens(n(1), 500));  // generated tokens, ids recorded
  const std::vector<BlockId> a_blocks = mgr.blocks(a);
  mgr.finish(a);
  EXPECT_FALSE(mgr.contains(a));
  // Its full blocks are cached; a partial last block (block size > 1) is released.
  const auto full = static_cast<std::int32_t>((prompt.size() + n(1)) / n(1));
  EXPECT_EQ(tree.cached_blocks(), full);
  EXPECT_EQ(alloc.num_used(), full);
  if (bs() > 1) EXPECT_EQ(alloc.ref_count(a_blocks[4]), 0);
  tree.validate();

  // The same prompt again: 3 blocks from the cache, the last token and its block computed.
  const SequenceId b = mgr.add(prompt);
  EXPECT_EQ(mgr.cached_prefix_len(b), 3 * bs());
  EXPECT_EQ(std::vector<BlockId>(mgr.blocks(b).begin(), mgr.blocks(b).begin() + 3),
            std::vector<BlockId>(a_blocks.begin(), a_blocks.begin() + 3));
  EXPECT_NE(mgr.blocks(b)[3], a_blocks[3]);  // its own block for the token it computes
  EXPECT_EQ(tree.token_range(mgr.prefix_node(b)).end, 3 * bs());
  EXPECT_GT(tree.lock_count(mgr.prefix_node(b)), 0);
  EXPECT_EQ(alloc.ref_count(a_blocks[0]), 2);  // the tree and b
  const std::vector<std::int32_t> slots = mgr.take_slot_mapping({b});
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_EQ(slots[0], mgr.blocks(b)[3] * bs());
  // With the generated tokens the whole 4 blocks are cached, but the last token stays uncached.
  const SequenceId c = mgr.add(concat(prompt, iota_tokens(n(1) - 1, 500)));
  EXPECT_EQ(mgr.cached_prefix_len(c), 3 * bs());
  const SequenceId d = mgr.add(concat(prompt, iota_tokens(n(1), 500)));
  EXPECT_EQ(mgr.cached_prefix_len(d), 4 * bs());
  EXPECT_EQ(tree.hit_tokens(), static_cast<std::uint64_t>(10 * bs()));
  mgr.abort(b);
  mgr.abort(c);
  mgr.release(d);
  EXPECT_EQ(tree.locked_blocks(), 0);
  EXPECT_EQ(alloc.num_used(), full);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, EmptyAndShortPrompts) {
  const SequenceId e = mgr.add({});
  EXPECT_EQ(mgr.context_len(e), 0);
  EXPECT_TRUE(mgr.blocks(e).empty());
  EXPECT_EQ(mgr.prefix_node(e), tree.root());
  mgr.append_tokens(e, iota_tokens(n(2)));
  mgr.finish(e);
  EXPECT_EQ(tree.cached_blocks(), 2);
  const SequenceId s = mgr.add(iota_tokens(1));  // shorter than one block (or exactly one)
  EXPECT_EQ(mgr.cached_prefix_len(s), 0);
  mgr.finish(s);
  EXPECT_EQ(tree.cached_blocks(), 2);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, AbortCachesNothingAndPlainAppendStopsRecording) {
  const SequenceId a = mgr.add(iota_tokens(n(2)));
  mgr.abort(a);
  EXPECT_EQ(tree.cached_blocks(), 0);
  EXPECT_EQ(alloc.num_used(), 0);
  // Ids known only for the first 2 blocks: only those are cached.
  const SequenceId b = mgr.add(iota_tokens(n(2)));
  mgr.append(b, bs());
  mgr.append_tokens(b, iota_tokens(n(1), 900));  // recorded no more: position unknown
  mgr.finish(b);
  EXPECT_EQ(tree.cached_blocks(), 2);
  EXPECT_EQ(alloc.num_used(), 2);
  const SequenceId c = mgr.create(n(2));  // no ids at all
  mgr.finish(c);
  EXPECT_EQ(tree.cached_blocks(), 2);
  EXPECT_EQ(alloc.num_used(), 2);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, NamespacesDoNotShare) {
  const auto prompt = iota_tokens(n(2) + 1);
  mgr.finish(mgr.add(prompt, 1));
  const SequenceId other = mgr.add(prompt, 2);
  EXPECT_EQ(mgr.cached_prefix_len(other), 0);
  const SequenceId same = mgr.add(prompt, 1);
  EXPECT_EQ(mgr.cached_prefix_len(same), 2 * bs());
  mgr.finish(other);
  mgr.finish(same);
  // One copy per namespace.
  EXPECT_EQ(tree.cached_blocks(), 2 * static_cast<std::int32_t>(prompt.size() / n(1)));
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, ConcurrentIdenticalRequestsDeduplicateAtFinish) {
  const auto prompt = iota_tokens(n(3));
  const SequenceId a = mgr.add(prompt);
  const SequenceId b = mgr.add(prompt);  // nothing cached yet: computes its own copy
  EXPECT_EQ(alloc.num_used(), 6);
  mgr.finish(a);
  mgr.finish(b);  // its 3 blocks are duplicates: released
  EXPECT_EQ(tree.cached_blocks(), 3);
  EXPECT_EQ(alloc.num_used(), 3);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, AddEvictsLeastRecentlyUsedButNeverItsOwnPrefix) {
  // Fill the pool with 8 cached prompts of 8 blocks = 64 blocks.
  for (int p = 0; p < 8; ++p) {
    mgr.finish(mgr.add(iota_tokens(n(8), 1000 * (p + 1))));
  }
  EXPECT_EQ(alloc.num_free(), 0);
  // Prompt 0 shares 7 cached blocks with this one (the oldest entry) and needs 9 new blocks.
  const auto prompt = concat(iota_tokens(n(7), 1000), iota_tokens(n(9), 77777));
  const SequenceId s = mgr.add(prompt);
  EXPECT_EQ(mgr.cached_prefix_len(s), 7 * bs());
  EXPECT_EQ(mgr.blocks(s).size(), 16u);
  EXPECT_TRUE(tree.contains(mgr.prefix_node(s)));
  // Prompt 0's own last block and prompt 1 (the next least recent) had to go.
  EXPECT_EQ(tree.peek_prefix(iota_tokens(n(8), 1000).data(), n(8)).num_tokens, 7 * bs());
  EXPECT_EQ(tree.peek_prefix(iota_tokens(n(8), 2000).data(), n(8)).num_tokens, 0);
  EXPECT_EQ(tree.peek_prefix(iota_tokens(n(8), 8000).data(), n(8)).num_tokens, 8 * bs());
  mgr.finish(s);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, CapacityErrorChangesNothing) {
  const auto cached_prompt = iota_tokens(n(20));
  mgr.finish(mgr.add(cached_prompt));        // 20 cached, evictable blocks
  const SequenceId big = mgr.create(n(40));  // 40 held by a sequence: 4 free
  std::vector<SequenceId> ids{big};
  // Needs 30 blocks from a pool with 4 free + 20 evictable: impossible.
  const std::string before = observe(alloc, tree, mgr, ids);
  EXPECT_THROW(mgr.add(iota_tokens(n(30), 5000)), ra::CapacityError);
  EXPECT_EQ(observe(alloc, tree, mgr, ids), before);
  // Shares 19 blocks with the cache and needs 11 more: 4 free + 20 evictable would do, but the
  // 19 shared ones are exactly those it would have to evict.
  EXPECT_THROW(mgr.add(concat(iota_tokens(n(19)), iota_tokens(n(11), 5000))), ra::CapacityError);
  EXPECT_EQ(observe(alloc, tree, mgr, ids), before);
  EXPECT_EQ(mgr.num_sequences(), 1u);
  tree.validate();
  // Needs 5 new blocks after sharing 19: 4 free + 1 evictable (the 20th) is enough.
  const SequenceId ok = mgr.add(concat(iota_tokens(n(19)), iota_tokens(n(5) - 1, 5000)));
  EXPECT_EQ(mgr.cached_prefix_len(ok), 19 * bs());
  EXPECT_EQ(alloc.num_free(), 0);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, ForkedChildKeepsThePrefixLocked) {
  const auto prompt = iota_tokens(n(4) + 1);
  mgr.finish(mgr.add(prompt));
  const SequenceId parent = mgr.add(concat(prompt, iota_tokens(3, 50)));
  const NodeHandle node = mgr.prefix_node(parent);
  const std::int32_t locks = tree.lock_count(node);
  const ra::ForkResult f = mgr.fork(parent);
  EXPECT_EQ(tree.lock_count(node), locks + 1);
  EXPECT_EQ(mgr.prefix_node(f.child), node);
  mgr.append_tokens(f.child, iota_tokens(n(1), 7000));
  mgr.finish(parent);
  EXPECT_EQ(tree.lock_count(node), locks);
  tree.evict(1000);  // the parent's new entries may go; the child's locked prefix stays
  EXPECT_TRUE(tree.contains(node));
  for (BlockId b : mgr.blocks(f.child)) EXPECT_GE(alloc.ref_count(b), 1);
  mgr.finish(f.child);
  tree.validate();
  tree.evict(1000);
  EXPECT_EQ(alloc.num_used(), 0);
}

TEST_P(SequenceManagerTreeTest, BlocksSharedWithAForkAreNotCountedAsEvictable) {
  const SequenceId parent = mgr.add(iota_tokens(n(10)));
  const ra::ForkResult f = mgr.fork(parent);  // shares all 10 (full) blocks
  mgr.finish(parent);                         // cached in unlocked nodes, still held by the child
  EXPECT_EQ(tree.evictable_blocks(), 10);
  EXPECT_TRUE(tree.holds_unlocked(mgr.blocks(f.child)[0]));
  const SequenceId hog = mgr.create(alloc.num_free() * bs());
  const std::vector<SequenceId> ids{f.child, hog};
  const std::string before = observe(alloc, tree, mgr, ids);
  // Evicting would drop the cache entries but free nothing: refused up front.
  EXPECT_THROW(mgr.add(iota_tokens(n(2), 9000)), ra::CapacityError);
  EXPECT_EQ(observe(alloc, tree, mgr, ids), before);
  mgr.abort(f.child);  // now the 10 cached blocks are the tree's alone
  const SequenceId s = mgr.add(iota_tokens(n(2), 9000));
  EXPECT_EQ(mgr.blocks(s).size(), 2u);
  tree.validate();
}

TEST_P(SequenceManagerTreeTest, UnknownAndFinishedIdsAreRejected) {
  const SequenceId s = mgr.add(iota_tokens(n(2)));
  mgr.finish(s);
  const std::string before = observe(alloc, tree, mgr, {});
  for (SequenceId bad : {s, SequenceId{12345}, SequenceId{-1}}) {
    EXPECT_THROW(mgr.finish(bad), ra::InvalidArgument);
    EXPECT_THROW(mgr.abort(bad), ra::InvalidArgument);
    EXPECT_THROW(mgr.append_tokens(bad, {1}), ra::InvalidArgument);
    EXPECT_THROW(mgr.prefix_node(bad), ra::InvalidArgument);
    EXPECT_THROW(mgr.cached_prefix_len(bad), ra::InvalidArgument);
  }
  try {
    mgr.finish(s);
  } catch (const ra::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("seq = " + std::to_string(s)), std::string::npos);
  }
  EXPECT_EQ(observe(alloc, tree, mgr, {}), before);
  // append_tokens that cannot get a block: nothing appended, nothing recorded.
  const SequenceId t = mgr.add(iota_tokens(n(1)));
  const SequenceId hog = mgr.create(alloc.num_free() * bs());
  tree.lock(tree.root());
  const std::string full = observe(alloc, tree, mgr, {t, hog});
  EXPECT_THROW(mgr.append_tokens(t, iota_tokens(n(1) + 1, 40)), ra::CapacityError);
  EXPECT_EQ(observe(alloc, tree, mgr, {t, hog}), full);
  tree.unlock(tree.root());
}

TEST_P(SequenceManagerTreeTest, DestructorDropsLocksAndBlocks) {
  {
    ra::SequenceManager m2(alloc, tree);
    m2.finish(m2.add(iota_tokens(n(3))));
    m2.add(iota_tokens(n(3) + 2));
    EXPECT_GT(tree.locked_blocks(), 0);
  }
  EXPECT_EQ(tree.locked_blocks(), 0);
  EXPECT_EQ(alloc.num_used(), tree.cached_blocks());
  tree.validate();
}

static_assert(std::is_nothrow_destructible_v<ra::SequenceManager>);

// The tree and the allocator changed behind the manager's back (a prefix lock dropped, a block
// released): destroying the manager must neither throw nor terminate, and the tree stays valid.
TEST_P(SequenceManagerTreeTest, DestructorSurvivesStateChangedBehindItsBack) {
  {
    ra::SequenceManager m2(alloc, tree);
    m2.finish(m2.add(iota_tokens(n(3))));
    const SequenceId s = m2.add(iota_tokens(n(3) + 1));
    ASSERT_NE(m2.prefix_node(s), tree.root());
    tree.unlock(m2.prefix_node(s));  // the manager's lock, dropped by someone else
    const SequenceId t = m2.create(2 * bs());
    alloc.release(m2.blocks(t)[0]);  // its block, released by someone else
  }
  EXPECT_EQ(tree.locked_blocks(), 0);
  tree.validate();
}

}  // namespace
