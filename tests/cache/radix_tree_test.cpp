// Unit tests of RadixTree: match / insert / split / namespaces / locks / eviction / statistics,
// and the strong guarantee on bad input (tree and allocator unchanged).
#include "radix_attention/cache/radix_tree.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "cache/cache_test_support.hpp"

namespace ra = radix_attention;
using ra::BlockId;
using ra::NodeHandle;
using ra::TokenId;

namespace {

using cache_test::concat;
using cache_test::iota_tokens;

// Canonical text of the tree (children sorted by key) plus counters and every block's ref count:
// equal before and after a failed operation iff nothing changed.
std::string snapshot(const ra::RadixTree& tree, const ra::BlockAllocator& alloc) {
  std::ostringstream out;
  const ra::RadixTreeStats s = tree.stats();
  out << "nodes " << s.num_nodes << " cached " << s.cached_blocks << " locked " << s.locked_blocks
      << " hits " << s.hit_tokens << " misses " << s.miss_tokens << " free " << alloc.num_free()
      << "\n";
  for (BlockId b = 0; b < alloc.num_blocks(); ++b) out << alloc.ref_count(b) << ' ';
  out << "\n";
  struct Walk {
    const ra::RadixTree& t;
    std::ostringstream& o;
    void operator()(NodeHandle h, int indent) {
      o << std::string(static_cast<std::size_t>(indent), ' ') << "ns" << t.node_namespace(h) << " ["
        << t.token_range(h).begin << "," << t.token_range(h).end << ") locks " << t.lock_count(h)
        << " t " << t.last_access(h) << " blocks";
      for (BlockId b : t.node_blocks(h)) o << ' ' << b;
      o << "\n";
      std::vector<NodeHandle> kids = t.children(h);
      std::sort(kids.begin(), kids.end(), [&](NodeHandle a, NodeHandle b) {
        return std::make_pair(t.node_namespace(a), t.edge_tokens(a)) <
               std::make_pair(t.node_namespace(b), t.edge_tokens(b));
      });
      for (NodeHandle k : kids) (*this)(k, indent + 1);
    }
  };
  Walk{tree, out}(tree.root(), 0);
  return out.str();
}

class RadixTreeTest : public ::testing::TestWithParam<std::int32_t> {
 protected:
  std::int32_t bs() const { return GetParam(); }
  ra::BlockAllocator alloc{4096};
  ra::RadixTree tree{alloc, GetParam()};

  // Inserts `tokens` (a whole number of blocks) with freshly allocated blocks.
  ra::InsertResult insert_new(const std::vector<TokenId>& tokens, ra::NamespaceId ns = 0) {
    const auto blocks = alloc.allocate(static_cast<std::int32_t>(tokens.size()) / bs());
    return tree.insert(tokens, blocks, ns);
  }
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, RadixTreeTest, ::testing::Values(1, 16, 64));

TEST_P(RadixTreeTest, EmptyTreeAndEmptyPrompts) {
  ra::PrefixMatch m = tree.match_prefix(iota_tokens(3 * bs()));
  EXPECT_EQ(m.num_tokens, 0);
  EXPECT_TRUE(m.blocks.empty());
  EXPECT_EQ(m.node, tree.root());
  EXPECT_EQ(tree.miss_tokens(), static_cast<std::uint64_t>(3 * bs()));
  m = tree.match_prefix(std::vector<TokenId>{});
  EXPECT_EQ(m.node, tree.root());
  const ra::InsertResult r = tree.insert(std::vector<TokenId>{}, std::vector<BlockId>{});
  EXPECT_EQ(r.num_tokens, 0);
  EXPECT_EQ(r.node, tree.root());
  EXPECT_EQ(tree.num_nodes(), 1);
  tree.validate();
}

TEST_P(RadixTreeTest, InsertThenMatchWholeAndPartialBlocks) {
  const auto tokens = iota_tokens(4 * bs());
  const auto blocks = alloc.allocate(4);
  const ra::InsertResult r = tree.insert(tokens, blocks);
  EXPECT_EQ(r.num_tokens, 4 * bs());
  EXPECT_EQ(r.num_deduplicated, 0);
  EXPECT_EQ(tree.cached_blocks(), 4);
  for (BlockId b : blocks) EXPECT_EQ(alloc.ref_count(b), 1);  // the caller's reference moved

  // Full prompt plus uncached tokens (a block and a half): only the cached blocks match.
  auto longer = concat(tokens, iota_tokens(static_cast<std::size_t>(bs() + bs() / 2), 9000));
  ra::PrefixMatch m = tree.match_prefix(longer);
  EXPECT_EQ(m.num_tokens, 4 * bs());
  EXPECT_EQ(m.blocks, blocks);
  EXPECT_EQ(m.node, r.node);

  // Shorter than one block: nothing matches.
  if (bs() > 1) {
    m = tree.match_prefix(std::vector<TokenId>(tokens.begin(), tokens.begin() + bs() - 1));
    EXPECT_EQ(m.num_tokens, 0);
    EXPECT_EQ(m.node, tree.root());
  }
  // A prefix ending inside a block: rounded down to whole blocks, edge split there.
  m = tree.match_prefix(std::vector<TokenId>(tokens.begin(), tokens.begin() + 2 * bs() + bs() / 2));
  EXPECT_EQ(m.num_tokens, 2 * bs());
  EXPECT_EQ(m.blocks, std::vector<BlockId>(blocks.begin(), blocks.begin() + 2));
  EXPECT_EQ(tree.token_range(m.node).end, 2 * bs());
  EXPECT_EQ(tree.parent(r.node), m.node);  // the insert's handle still ends at 4 blocks
  EXPECT_EQ(tree.token_range(r.node).begin, 2 * bs());
  EXPECT_EQ(tree.token_range(r.node).end, 4 * bs());
  EXPECT_EQ(tree.path_blocks(r.node), blocks);
  tree.validate();
}

TEST_P(RadixTreeTest, PeekPrefixChangesNothing) {
  const ra::InsertResult r = insert_new(iota_tokens(4 * bs()));
  tree.lock(r.node);
  insert_new(concat(iota_tokens(2 * bs()), iota_tokens(bs(), 600)));  // splits at 2 blocks
  const std::string before = snapshot(tree, alloc);
  auto probe = concat(iota_tokens(3 * bs()), iota_tokens(bs(), 900));
  ra::PrefixPeek p = tree.peek_prefix(probe.data(), probe.size());
  EXPECT_EQ(p.num_tokens, 3 * bs());
  EXPECT_EQ(p.unlocked_blocks, 0);
  probe = concat(iota_tokens(2 * bs()), iota_tokens(bs(), 600));
  p = tree.peek_prefix(probe.data(), probe.size());
  EXPECT_EQ(p.num_tokens, 3 * bs());
  EXPECT_EQ(p.unlocked_blocks, 1);  // the other branch's leaf; the shared part is locked
  EXPECT_EQ(tree.peek_prefix(probe.data(), probe.size(), 5).num_tokens, 0);
  EXPECT_EQ(snapshot(tree, alloc), before);
  EXPECT_THROW(tree.peek_prefix(nullptr, 3), ra::InvalidArgument);
  tree.unlock(r.node);
}

TEST_P(RadixTreeTest, DivergenceInTheMiddleOfAnEdgeSplitsAtABlockBoundary) {
  const auto a = iota_tokens(8 * bs());
  const ra::InsertResult ra_ = insert_new(a);
  // b shares 3 blocks and a part of the 4th with a.
  auto b = a;
  b[3 * bs() + bs() / 2] = -7;
  const auto b_blocks = alloc.allocate(8);
  const std::int32_t free_before = alloc.num_free();
  const ra::InsertResult rb = tree.insert(b, b_blocks);
  EXPECT_EQ(rb.num_deduplicated, 3);
  EXPECT_EQ(alloc.num_free(), free_before + 3);  // the caller's 3 duplicates went back
  for (int i = 0; i < 3; ++i) EXPECT_EQ(alloc.ref_count(b_blocks[i]), 0);
  EXPECT_EQ(tree.cached_blocks(), 8 + 5);

  const NodeHandle mid = tree.parent(ra_.node);
  EXPECT_EQ(tree.parent(rb.node), mid);
  EXPECT_EQ(tree.parent(mid), tree.root());
  EXPECT_EQ(tree.token_range(mid).end, 3 * bs());
  EXPECT_EQ(tree.num_children(mid), 2);
  EXPECT_EQ(tree.depth(rb.node), 2);
  const std::vector<NodeHandle> path = tree.path(rb.node);
  ASSERT_EQ(path.size(), 3u);
  EXPECT_EQ(path[0], tree.root());
  EXPECT_EQ(path[1], mid);

  const ra::PrefixMatch m = tree.match_prefix(b);
  EXPECT_EQ(m.num_tokens, 8 * bs());
  EXPECT_EQ(m.node, rb.node);
  EXPECT_EQ(std::vector<BlockId>(m.blocks.begin() + 3, m.blocks.end()),
            std::vector<BlockId>(b_blocks.begin() + 3, b_blocks.end()));
  tree.validate();
}

TEST_P(RadixTreeTest, ReinsertingTheSameSequenceDeduplicatesEverything) {
  const auto tokens = iota_tokens(5 * bs());
  const ra::InsertResult first = insert_new(tokens);
  const auto blocks = alloc.allocate(5);
  ra::InsertResult again = tree.insert(tokens, blocks);
  EXPECT_EQ(again.num_deduplicated, 5);
  EXPECT_EQ(again.node, first.node);
  for (BlockId b : blocks) EXPECT_EQ(alloc.ref_count(b), 0);
  EXPECT_EQ(tree.cached_blocks(), 5);

  // The same block ids (retained from a match, as a sequence does): references balance.
  const ra::PrefixMatch m = tree.match_prefix(tokens);
  alloc.retain(m.blocks);
  again = tree.insert(tokens, m.blocks);
  EXPECT_EQ(again.num_deduplicated, 5);
  for (BlockId b : m.blocks) EXPECT_EQ(alloc.ref_count(b), 1);
  EXPECT_EQ(tree.num_nodes(), 2);
  tree.validate();
}

TEST_P(RadixTreeTest, NamespacesNeverShare) {
  const auto tokens = iota_tokens(3 * bs());
  const ra::InsertResult r1 = insert_new(tokens, 1);
  EXPECT_EQ(tree.match_prefix(tokens, 2).num_tokens, 0);
  EXPECT_EQ(tree.match_prefix(tokens).num_tokens, 0);  // default namespace 0 is separate too
  const ra::InsertResult r2 = insert_new(tokens, 2);
  EXPECT_EQ(r2.num_deduplicated, 0);
  EXPECT_NE(r1.node, r2.node);
  EXPECT_EQ(tree.cached_blocks(), 6);
  const ra::PrefixMatch m1 = tree.match_prefix(tokens, 1);
  const ra::PrefixMatch m2 = tree.match_prefix(tokens, 2);
  EXPECT_EQ(m1.node, r1.node);
  EXPECT_EQ(m2.node, r2.node);
  for (BlockId b : m1.blocks) {
    EXPECT_EQ(std::count(m2.blocks.begin(), m2.blocks.end(), b), 0);
  }
  EXPECT_EQ(tree.node_namespace(r2.node), 2u);
  tree.validate();
}

TEST_P(RadixTreeTest, HitAndMissCountsInTokens) {
  insert_new(iota_tokens(2 * bs()));
  tree.match_prefix(iota_tokens(3 * bs() + 1));   // 2 blocks hit, 1 block + 1 token missed
  tree.match_prefix(iota_tokens(2 * bs(), 777));  // all missed
  EXPECT_EQ(tree.hit_tokens(), static_cast<std::uint64_t>(2 * bs()));
  EXPECT_EQ(tree.miss_tokens(), static_cast<std::uint64_t>(3 * bs() + 1));
  EXPECT_DOUBLE_EQ(tree.stats().hit_rate(), 2.0 * bs() / (5.0 * bs() + 1));
  tree.reset_stats();
  EXPECT_EQ(tree.stats().hit_rate(), 0.0);
}

TEST_P(RadixTreeTest, EvictsLeastRecentlyUsedFirstAndCascades) {
  const auto shared = iota_tokens(2 * bs());
  const ra::InsertResult a = insert_new(concat(shared, iota_tokens(bs(), 100)));
  const ra::InsertResult b = insert_new(concat(shared, iota_tokens(2 * bs(), 200)));
  const ra::InsertResult c = insert_new(iota_tokens(bs(), 300));
  tree.match_prefix(concat(shared, iota_tokens(bs(), 100)));  // a is now the most recent
  EXPECT_EQ(tree.evictable_blocks(), 2 + 1 + 2 + 1);
  EXPECT_EQ(tree.evict(1), 2);  // b (2 blocks, the oldest leaf): whole nodes go
  EXPECT_FALSE(tree.contains(b.node));
  EXPECT_TRUE(tree.contains(a.node));
  EXPECT_EQ(tree.evict(1), 1);  // c
  EXPECT_FALSE(tree.contains(c.node));
  EXPECT_EQ(tree.evict(2), 3);  // a, then its parent (now an unlocked leaf)
  EXPECT_EQ(tree.num_nodes(), 1);
  EXPECT_EQ(alloc.num_free(), alloc.num_blocks());
  EXPECT_EQ(tree.stats().evicted_blocks, 6u);
  EXPECT_EQ(tree.evict(5), 0);
  tree.validate();
}

TEST_P(RadixTreeTest, LockedPathsAreNeverEvicted) {
  const auto shared = iota_tokens(2 * bs());
  const ra::InsertResult a = insert_new(concat(shared, iota_tokens(bs(), 100)));
  const ra::InsertResult b = insert_new(concat(shared, iota_tokens(bs(), 200)));
  tree.lock(a.node);
  tree.lock(a.node);
  const NodeHandle mid = tree.parent(a.node);
  EXPECT_EQ(tree.lock_count(mid), 2);
  EXPECT_EQ(tree.locked_blocks(), 3);
  EXPECT_EQ(tree.evictable_blocks(), 1);
  EXPECT_EQ(tree.evict(100), 1);  // only b
  EXPECT_FALSE(tree.contains(b.node));
  EXPECT_TRUE(tree.contains(mid));
  EXPECT_THROW(tree.unlock(mid), ra::StateError);  // mid is in use, but not locked itself
  tree.unlock(a.node);
  EXPECT_EQ(tree.evict(100), 0);
  tree.unlock(a.node);
  EXPECT_THROW(tree.unlock(a.node), ra::StateError);
  EXPECT_EQ(tree.evictable_blocks(), 3);
  EXPECT_EQ(tree.evict(100), 3);
  tree.lock(tree.root());  // allowed, protects nothing
  tree.unlock(tree.root());
  tree.validate();
}

TEST_P(RadixTreeTest, EvictionCountsOnlyBlocksThatReachTheFreeList) {
  const ra::InsertResult r = insert_new(iota_tokens(3 * bs()));
  const std::vector<BlockId> blocks = tree.path_blocks(r.node);
  alloc.retain(blocks[2]);  // someone outside the tree still holds the last block
  EXPECT_EQ(tree.evict(1), 2);
  EXPECT_EQ(alloc.ref_count(blocks[2]), 1);
  alloc.release(blocks[2]);
  tree.validate();
}

TEST_P(RadixTreeTest, DestructorReleasesTheTreesReferences) {
  {
    ra::RadixTree t2(alloc, bs());
    t2.insert(iota_tokens(2 * bs()), alloc.allocate(2));
    EXPECT_EQ(alloc.num_used(), 2);
  }
  EXPECT_EQ(alloc.num_used(), 0);
}

static_assert(std::is_nothrow_destructible_v<ra::RadixTree>);

// A caller that released the tree's references behind its back leaves allocator counts the tree
// disagrees with; destroying the tree must neither throw (std::terminate from a destructor) nor
// give up on the blocks it still holds.
TEST_P(RadixTreeTest, DestructorSurvivesInconsistentAllocatorCounts) {
  {
    ra::RadixTree t2(alloc, bs());
    const std::vector<BlockId> blocks = alloc.allocate(3);
    t2.insert(iota_tokens(3 * bs()), blocks);
    alloc.release(blocks[0]);  // the tree's own reference, dropped by someone else
    alloc.release(blocks[2]);
    EXPECT_THROW(t2.validate(), ra::StateError);
    EXPECT_EQ(alloc.num_used(), 1);
  }
  EXPECT_EQ(alloc.num_used(), 0);  // blocks[1] went back too
}

TEST_P(RadixTreeTest, BadInputChangesNothing) {
  insert_new(iota_tokens(4 * bs()));
  const ra::InsertResult other = insert_new(concat(iota_tokens(bs()), iota_tokens(bs(), 50)));
  tree.lock(other.node);
  const std::string before = snapshot(tree, alloc);
  const auto tokens = concat(iota_tokens(2 * bs()), iota_tokens(2 * bs(), 900));  // splits if ok
  auto fresh = alloc.allocate(3);
  const std::string with_fresh = snapshot(tree, alloc);

  auto expect_unchanged = [&](const std::string& expected) {
    EXPECT_EQ(snapshot(tree, alloc), expected);
    tree.validate();
  };
  // Count mismatch.
  EXPECT_THROW(tree.insert(tokens, fresh), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  // Foreign ids, freed id, a block only the tree holds, a block listed twice.
  const std::vector<BlockId> cached = tree.path_blocks(other.node);
  for (BlockId bad : {-1, alloc.num_blocks(), alloc.num_blocks() + 7}) {
    EXPECT_THROW(tree.insert(tokens, {fresh[0], fresh[1], fresh[2], bad}), ra::InvalidArgument);
    expect_unchanged(with_fresh);
  }
  const BlockId freed = alloc.allocate(1)[0];
  alloc.release(freed);
  EXPECT_THROW(tree.insert(tokens, {fresh[0], fresh[1], fresh[2], freed}), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  EXPECT_THROW(tree.insert(tokens, {fresh[0], fresh[1], fresh[2], cached.back()}),
               ra::InvalidArgument);
  expect_unchanged(with_fresh);
  EXPECT_THROW(tree.insert(tokens, {fresh[0], fresh[1], fresh[2], fresh[2]}), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  // Passing the cached blocks back without holding a reference of one's own.
  EXPECT_THROW(tree.insert(iota_tokens(bs()), {cached.front()}), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  EXPECT_THROW(tree.insert(nullptr, 2, fresh.data(), 2), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  EXPECT_THROW(tree.match_prefix(nullptr, 5), ra::InvalidArgument);
  expect_unchanged(with_fresh);
  alloc.release(fresh);

  // Handles: default, out of range, evicted.
  for (NodeHandle bad : {NodeHandle{}, NodeHandle{-5}, NodeHandle{123456}}) {
    EXPECT_THROW(tree.lock(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.unlock(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.parent(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.children(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.token_range(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.node_blocks(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.path(bad), ra::InvalidArgument);
    EXPECT_THROW(tree.depth(bad), ra::InvalidArgument);
  }
  EXPECT_THROW(tree.unlock(tree.root()), ra::StateError);
  EXPECT_THROW(tree.evict(-1), ra::InvalidArgument);
  expect_unchanged(before);

  tree.unlock(other.node);
  tree.evict(1000);
  EXPECT_FALSE(tree.contains(other.node));
  const std::string empty = snapshot(tree, alloc);
  EXPECT_THROW(tree.lock(other.node), ra::InvalidArgument);
  EXPECT_THROW(tree.unlock(other.node), ra::InvalidArgument);
  expect_unchanged(empty);
}

// A replacement policy, to show that one fits without touching the tree: evicts the most
// recently used leaf first.
class MruPolicy final : public ra::EvictionPolicy {
 public:
  void add(const ra::EvictionCandidate& c) override { set_.insert({c.last_access, c.node}); }
  void remove(std::int32_t node) override {
    for (auto it = set_.begin(); it != set_.end(); ++it) {
      if (it->second == node) {
        set_.erase(it);
        return;
      }
    }
  }
  std::int32_t victim() const override { return set_.empty() ? -1 : set_.rbegin()->second; }
  bool contains(std::int32_t node) const override {
    return std::any_of(set_.begin(), set_.end(), [&](auto& e) { return e.second == node; });
  }
  std::size_t size() const override { return set_.size(); }

 private:
  std::set<std::pair<std::uint64_t, std::int32_t>> set_;
};

TEST_P(RadixTreeTest, EvictionPolicyIsReplaceable) {
  ra::RadixTree mru(alloc, bs(), std::make_unique<MruPolicy>());
  const auto ba = alloc.allocate(1);
  const auto bb = alloc.allocate(1);
  const ra::InsertResult a = mru.insert(iota_tokens(bs(), 1), ba);
  const ra::InsertResult b = mru.insert(iota_tokens(bs(), 5000), bb);
  mru.match_prefix(iota_tokens(bs(), 1));  // a most recent: MRU evicts it first
  EXPECT_EQ(mru.evict(1), 1);
  EXPECT_FALSE(mru.contains(a.node));
  EXPECT_TRUE(mru.contains(b.node));
  mru.validate();
}

}  // namespace
