// BlockAllocator: every operation, every error (with "nothing changed" checks), and a randomized
// model test against a plain reference-count array.

#include "radix_attention/cache/block_allocator.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "cache/cache_test_support.hpp"

namespace ra = radix_attention;

namespace {

using cache_test::error_message;

// Everything observable about an allocator: the strong guarantee is checked by comparing these.
struct Snapshot {
  std::int32_t num_free;
  std::int32_t num_used;
  std::vector<std::int32_t> ref_counts;
  bool operator==(const Snapshot& o) const {
    return num_free == o.num_free && num_used == o.num_used && ref_counts == o.ref_counts;
  }
};

Snapshot snapshot(const ra::BlockAllocator& a) {
  Snapshot s{a.num_free(), a.num_used(), {}};
  for (ra::BlockId b = 0; b < a.num_blocks(); ++b) s.ref_counts.push_back(a.ref_count(b));
  return s;
}

// Drains the free list and gives it back: the set of free blocks, observed without internals.
std::set<ra::BlockId> free_set(ra::BlockAllocator& a) {
  std::vector<ra::BlockId> all = a.allocate(a.num_free());
  a.release(all);
  return {all.begin(), all.end()};
}

}  // namespace

TEST(BlockAllocator, ConstructionRejectsEmptyPool) {
  EXPECT_THROW(ra::BlockAllocator(0), ra::InvalidArgument);
  EXPECT_THROW(ra::BlockAllocator(-3), ra::InvalidArgument);
  EXPECT_NE(error_message([] { ra::BlockAllocator a(0); }).find("num_blocks = 0"),
            std::string::npos);
}

TEST(BlockAllocator, FreshPoolIsAllFreeAndHandsOutAscendingIds) {
  ra::BlockAllocator a(4);
  EXPECT_EQ(a.num_blocks(), 4);
  EXPECT_EQ(a.num_free(), 4);
  EXPECT_EQ(a.num_used(), 0);
  for (ra::BlockId b = 0; b < 4; ++b) EXPECT_EQ(a.ref_count(b), 0);
  EXPECT_EQ(a.allocate(3), (std::vector<ra::BlockId>{0, 1, 2}));
  EXPECT_EQ(a.num_free(), 1);
  EXPECT_EQ(a.num_used(), 3);
  for (ra::BlockId b = 0; b < 3; ++b) EXPECT_EQ(a.ref_count(b), 1);
  EXPECT_EQ(a.ref_count(3), 0);
}

TEST(BlockAllocator, ContainsChecksTheIdRangeOnly) {
  ra::BlockAllocator a(2);
  EXPECT_TRUE(a.contains(0));
  EXPECT_TRUE(a.contains(1));
  EXPECT_FALSE(a.contains(2));
  EXPECT_FALSE(a.contains(-1));
}

TEST(BlockAllocator, AllocateZeroIsANoOp) {
  ra::BlockAllocator a(2);
  EXPECT_TRUE(a.allocate(0).empty());
  EXPECT_EQ(a.num_free(), 2);
}

TEST(BlockAllocator, AllocateIsAllOrNothing) {
  ra::BlockAllocator a(5);
  a.allocate(3);
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.allocate(3), ra::CapacityError);
  EXPECT_EQ(snapshot(a), before);
  const std::string msg = error_message([&] { a.allocate(3); });
  EXPECT_NE(msg.find("n = 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("2 free"), std::string::npos) << msg;
  EXPECT_THROW(a.allocate(-1), ra::InvalidArgument);
  EXPECT_EQ(snapshot(a), before);
  EXPECT_EQ(a.allocate(2).size(), 2u);  // exactly the remaining blocks still succeed
  EXPECT_EQ(a.num_free(), 0);
}

TEST(BlockAllocator, AllocateIntoAppendsAndLeavesOutputUntouchedOnFailure) {
  ra::BlockAllocator a(3);
  std::vector<ra::BlockId> out{42};
  a.allocate_into(2, out);
  EXPECT_EQ(out, (std::vector<ra::BlockId>{42, 0, 1}));
  EXPECT_THROW(a.allocate_into(2, out), ra::CapacityError);
  EXPECT_EQ(out, (std::vector<ra::BlockId>{42, 0, 1}));
  EXPECT_THROW(a.allocate_into(-1, out), ra::InvalidArgument);
  EXPECT_EQ(out.size(), 3u);
}

TEST(BlockAllocator, RetainAndReleaseCountHolders) {
  ra::BlockAllocator a(2);
  const ra::BlockId b = a.allocate(1)[0];
  a.retain(b);
  a.retain(b);
  EXPECT_EQ(a.ref_count(b), 3);
  a.release(b);
  a.release(b);
  EXPECT_EQ(a.ref_count(b), 1);
  EXPECT_EQ(a.num_free(), 1);
  a.release(b);
  EXPECT_EQ(a.ref_count(b), 0);
  EXPECT_EQ(a.num_free(), 2);
  // A freed block is handed out again (and only once).
  std::vector<ra::BlockId> again = a.allocate(2);
  std::sort(again.begin(), again.end());
  EXPECT_EQ(again, (std::vector<ra::BlockId>{0, 1}));
}

TEST(BlockAllocator, DoubleReleaseIsATypedErrorThatChangesNothing) {
  ra::BlockAllocator a(2);
  const ra::BlockId b = a.allocate(1)[0];
  a.release(b);
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.release(b), ra::InvalidArgument);
  EXPECT_EQ(snapshot(a), before);
  const std::string msg = error_message([&] { a.release(b); });
  EXPECT_NE(msg.find("block = " + std::to_string(b)), std::string::npos) << msg;
  EXPECT_EQ(free_set(a), (std::set<ra::BlockId>{0, 1}));  // not on the free list twice
}

TEST(BlockAllocator, RetainOfAFreeBlockIsRejected) {
  ra::BlockAllocator a(2);
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.retain(1), ra::InvalidArgument);
  EXPECT_EQ(snapshot(a), before);
}

TEST(BlockAllocator, UnknownIdsAreRejectedEverywhere) {
  ra::BlockAllocator a(3);
  a.allocate(3);
  const Snapshot before = snapshot(a);
  for (ra::BlockId bad : {-1, 3, 1000}) {
    EXPECT_THROW(a.ref_count(bad), ra::InvalidArgument);
    EXPECT_THROW(a.retain(bad), ra::InvalidArgument);
    EXPECT_THROW(a.release(bad), ra::InvalidArgument);
    EXPECT_THROW(a.retain(std::vector<ra::BlockId>{0, bad}), ra::InvalidArgument);
    EXPECT_THROW(a.release(std::vector<ra::BlockId>{0, bad}), ra::InvalidArgument);
    EXPECT_EQ(snapshot(a), before);
  }
  const std::string msg = error_message([&] { a.release(7); });
  EXPECT_NE(msg.find("block = 7"), std::string::npos) << msg;
  EXPECT_NE(msg.find("pool of 3"), std::string::npos) << msg;
}

TEST(BlockAllocator, VectorRetainCountsDuplicatesAndIsAllOrNothing) {
  ra::BlockAllocator a(4);
  a.allocate(2);  // 0, 1 held; 2, 3 free
  a.retain(std::vector<ra::BlockId>{0, 0, 1});
  EXPECT_EQ(a.ref_count(0), 3);
  EXPECT_EQ(a.ref_count(1), 2);
  const Snapshot before = snapshot(a);
  EXPECT_THROW(a.retain(std::vector<ra::BlockId>{0, 1, 2}), ra::InvalidArgument);  // 2 is free
  EXPECT_EQ(snapshot(a), before);
  a.retain(std::vector<ra::BlockId>{});
  EXPECT_EQ(snapshot(a), before);
}

TEST(BlockAllocator, VectorReleaseCountsDuplicatesAndFreesEachBlockOnce) {
  ra::BlockAllocator a(4);
  a.allocate(3);                                    // 0, 1, 2 held once
  a.retain(std::vector<ra::BlockId>{0, 1});         // 0: 2, 1: 2
  a.release(std::vector<ra::BlockId>{0, 0, 1, 2});  // 0: 0, 1: 1, 2: 0
  EXPECT_EQ(a.ref_count(0), 0);
  EXPECT_EQ(a.ref_count(1), 1);
  EXPECT_EQ(a.ref_count(2), 0);
  EXPECT_EQ(a.num_free(), 3);
  EXPECT_EQ(free_set(a), (std::set<ra::BlockId>{0, 2, 3}));
}

TEST(BlockAllocator, VectorReleaseWithMoreReleasesThanHoldersChangesNothing) {
  ra::BlockAllocator a(4);
  a.allocate(3);
  a.retain(1);
  const Snapshot before = snapshot(a);
  // Block 0 has one holder but is listed twice: the whole call must fail, undoing 1 and 0.
  EXPECT_THROW(a.release(std::vector<ra::BlockId>{1, 0, 2, 0}), ra::InvalidArgument);
  EXPECT_EQ(snapshot(a), before);
  EXPECT_EQ(free_set(a), (std::set<ra::BlockId>{3}));
  EXPECT_THROW(a.release(std::vector<ra::BlockId>{3}), ra::InvalidArgument);  // free block
  EXPECT_EQ(snapshot(a), before);
}

// Randomized model test: a reference-count array is the model; after every operation the
// allocator must agree with it, num_free + num_used == num_blocks, and every allocation must
// hand out only blocks the model has as free (no block both free and held).
TEST(BlockAllocator, RandomizedAgainstReferenceModel) {
  constexpr std::int32_t kBlocks = 48;
  constexpr int kOps = 120000;
  std::mt19937 rng(20261125);
  ra::BlockAllocator a(kBlocks);
  std::vector<std::int32_t> model(kBlocks, 0);
  auto rand_int = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto held_count = [&] {
    return static_cast<std::int32_t>(
        std::count_if(model.begin(), model.end(), [](std::int32_t c) { return c > 0; }));
  };
  auto check = [&](int op) {
    ASSERT_EQ(a.num_free() + a.num_used(), a.num_blocks()) << "op " << op;
    ASSERT_EQ(a.num_used(), held_count()) << "op " << op;
    // One assertion for the whole array: per-element gtest assertions dominate the run time.
    bool counts_match = true;
    for (ra::BlockId b = 0; b < kBlocks; ++b) counts_match &= a.ref_count(b) == model[b];
    ASSERT_TRUE(counts_match) << "op " << op;
  };
  // Any id, including out-of-range ones, so that errors are exercised too.
  auto any_id = [&] { return rand_int(-2, kBlocks + 1); };
  auto valid_held = [&](ra::BlockId b) { return b >= 0 && b < kBlocks && model[b] > 0; };

  std::int64_t errors = 0;
  for (int op = 0; op < kOps; ++op) {
    // The model still holds the pre-operation counts when an operation throws, so check() below
    // also proves that a failed operation changed nothing. `expect_ok` is the model's verdict.
    bool expect_ok = true;
    try {
      switch (rand_int(0, 5)) {
        case 0: {
          const std::int32_t n = rand_int(-1, 6);
          const bool ok = n >= 0 && n <= kBlocks - held_count();
          expect_ok = ok;
          std::vector<ra::BlockId> got = a.allocate(n);
          ASSERT_TRUE(ok) << "allocate(" << n << ") should have thrown";
          for (ra::BlockId b : got) {
            ASSERT_EQ(model[b], 0) << "block " << b << " handed out while held";
            model[b] = 1;
          }
          break;
        }
        case 1: {
          const ra::BlockId b = any_id();
          const bool ok = valid_held(b);
          expect_ok = ok;
          a.retain(b);
          ASSERT_TRUE(ok);
          ++model[b];
          break;
        }
        case 2:
        case 3: {
          const ra::BlockId b = any_id();
          const bool ok = valid_held(b);
          expect_ok = ok;
          a.release(b);
          ASSERT_TRUE(ok);
          --model[b];
          break;
        }
        case 4:
        case 5: {
          std::vector<ra::BlockId> list(static_cast<std::size_t>(rand_int(0, 5)));
          for (ra::BlockId& b : list) b = rand_int(0, 9) == 0 ? any_id() : rand_int(0, 7);
          const bool is_retain = rand_int(0, 1) == 0;
          std::vector<std::int32_t> after = model;
          bool ok = true;
          for (ra::BlockId b : list) {
            if (!valid_held(b)) ok = false;  // retain/release check against the original counts
            if (ok) after[b] += is_retain ? 1 : -1;
          }
          if (!is_retain) {
            for (ra::BlockId b : list) ok = ok && after[b] >= 0;
          }
          expect_ok = ok;
          if (is_retain) {
            a.retain(list);
          } else {
            a.release(list);
          }
          ASSERT_TRUE(ok);
          model = after;
          break;
        }
      }
    } catch (const ra::Error& e) {
      ASSERT_FALSE(expect_ok) << "op " << op << " threw unexpectedly: " << e.what();
      ++errors;
    }
    check(op);
    if (HasFatalFailure()) return;
    if (op % 5000 == 0) {
      // The free list itself: exactly the blocks with no holder, each once.
      std::set<ra::BlockId> expected;
      for (ra::BlockId b = 0; b < kBlocks; ++b)
        if (model[b] == 0) expected.insert(b);
      ASSERT_EQ(free_set(a), expected);
    }
  }
  EXPECT_GT(errors, kOps / 20);  // the error paths were exercised, not just the happy ones
}
