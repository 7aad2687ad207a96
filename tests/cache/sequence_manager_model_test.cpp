// Randomized model test of SequenceManager + BlockAllocator: random create / append / fork /
// release / export / take_slot_mapping and allocator-level operations (blocks held outside any
// sequence), valid and invalid, against a plain reference model. After every operation:
//   - every block's reference count == its number of holders (sequences + outside holds),
//   - num_free + num_used == num_blocks and num_used == number of blocks with a holder,
//   - every live sequence's context length and block list match the model;
// a failed operation must leave all of it unchanged (the model is only updated on success).

#include "radix_attention/cache/sequence_manager.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <vector>

namespace ra = radix_attention;
using Blocks = std::vector<ra::BlockId>;

namespace {

struct ModelSeq {
  std::int32_t num_tokens = 0;
  Blocks blocks;
  std::int32_t pending_begin = 0;
};

enum class Outcome { kOk, kInvalid, kCapacity, kState };

class Harness {
 public:
  Harness(std::int32_t num_blocks, std::int32_t block_size, std::uint32_t seed)
      : alloc_(num_blocks),
        mgr_(alloc_, block_size),
        bs_(block_size),
        rng_(seed),
        outside_(static_cast<std::size_t>(num_blocks), 0) {}

  void run(int num_ops) {
    for (op_ = 0; op_ < num_ops; ++op_) {
      switch (rand_int(0, 15)) {
        case 0:
        case 1:
        case 2:
          do_create();
          break;
        case 3:
        case 4:
        case 5:
        case 6:
          do_append();
          break;
        case 7:
        case 8:
          do_fork();
          break;
        case 9:
        case 10:
        case 11:
          do_release();
          break;
        case 12:
          do_export();
          break;
        case 13:
          do_take();
          break;
        case 14:
          do_outside_acquire();
          break;
        case 15:
          do_outside_release();
          break;
      }
      if (testing::Test::HasFatalFailure()) return;
      check_invariants();
      if (testing::Test::HasFatalFailure()) return;
      if (op_ % 4000 == 0) check_free_list();
      if (testing::Test::HasFatalFailure()) return;
    }
  }

  std::int64_t count(Outcome o) const { return outcomes_.count(o) ? outcomes_.at(o) : 0; }

 private:
  int rand_int(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  // A live id most of the time, otherwise a released or never-created one.
  ra::SequenceId pick_seq() {
    if (!seqs_.empty() && rand_int(0, 9) != 0) {
      auto it = seqs_.begin();
      std::advance(it, rand_int(0, static_cast<int>(seqs_.size()) - 1));
      return it->first;
    }
    return rand_int(0, 1) == 0 ? next_id_ + rand_int(0, 3) : rand_int(-2, 2);
  }

  std::int32_t holders(ra::BlockId b) const {
    std::int32_t n = outside_[static_cast<std::size_t>(b)];
    for (const auto& s : seqs_)
      n += static_cast<std::int32_t>(std::count(s.second.blocks.begin(), s.second.blocks.end(), b));
    return n;
  }

  // Holders of every block: outside references + one per sequence listing it.
  std::vector<std::int32_t> all_holders() const {
    std::vector<std::int32_t> n(outside_);
    for (const auto& s : seqs_) {
      for (ra::BlockId b : s.second.blocks) ++n[static_cast<std::size_t>(b)];
    }
    return n;
  }

  std::int32_t model_free() const {
    const std::vector<std::int32_t> n = all_holders();
    return static_cast<std::int32_t>(std::count(n.begin(), n.end(), 0));
  }

  template <class F>
  Outcome attempt(F&& f) {
    Outcome got = Outcome::kOk;
    try {
      f();
    } catch (const ra::CapacityError&) {
      got = Outcome::kCapacity;
    } catch (const ra::StateError&) {
      got = Outcome::kState;
    } catch (const ra::InvalidArgument&) {
      got = Outcome::kInvalid;
    }
    ++outcomes_[got];
    return got;
  }

  // Blocks newly given to a sequence must have had no holder at all.
  void expect_were_free(const Blocks& fresh) {
    for (ra::BlockId b : fresh)
      ASSERT_EQ(holders(b), 0) << "op " << op_ << ": block " << b << " handed out while held";
  }

  void do_create() {
    const std::int32_t n = rand_int(-1, 3 * bs_);
    const std::int32_t need = n < 0 ? 0 : (n + bs_ - 1) / bs_;
    const Outcome want = n < 0                 ? Outcome::kInvalid
                         : need > model_free() ? Outcome::kCapacity
                                               : Outcome::kOk;
    ra::SequenceId id = -1;
    ASSERT_EQ(attempt([&] { id = mgr_.create(n); }), want)
        << "op " << op_ << " create(" << n << ")";
    if (want != Outcome::kOk) return;
    ASSERT_GE(id, next_id_) << "ids are never reused";
    next_id_ = id + 1;
    const Blocks& got = mgr_.blocks(id);
    ASSERT_EQ(static_cast<std::int32_t>(got.size()), need);
    expect_were_free(got);
    seqs_[id] = ModelSeq{n, got, 0};
  }

  void do_append() {
    const ra::SequenceId id = pick_seq();
    const std::int32_t n = rand_int(-1, 2 * bs_);
    auto it = seqs_.find(id);
    Outcome want = Outcome::kOk;
    std::int32_t grow = 0;
    if (it == seqs_.end() || n < 0) {
      want = Outcome::kInvalid;
    } else if (n > 0) {
      const ModelSeq& s = it->second;
      grow = (s.num_tokens + n + bs_ - 1) / bs_ - (s.num_tokens + bs_ - 1) / bs_;
      if (s.num_tokens % bs_ != 0 && holders(s.blocks.back()) > 1) {
        want = Outcome::kState;
      } else if (grow > model_free()) {
        want = Outcome::kCapacity;
      }
    }
    ASSERT_EQ(attempt([&] { mgr_.append(id, n); }), want)
        << "op " << op_ << " append(" << id << ", " << n << ")";
    if (want != Outcome::kOk) return;
    ModelSeq& s = it->second;
    const Blocks& got = mgr_.blocks(id);
    ASSERT_EQ(got.size(), s.blocks.size() + static_cast<std::size_t>(grow));
    ASSERT_TRUE(std::equal(s.blocks.begin(), s.blocks.end(), got.begin()))
        << "existing blocks moved";
    const Blocks fresh(got.begin() + static_cast<std::ptrdiff_t>(s.blocks.size()), got.end());
    expect_were_free(fresh);
    s.blocks = got;
    s.num_tokens += n;
  }

  void do_fork() {
    const ra::SequenceId id = pick_seq();
    auto it = seqs_.find(id);
    Outcome want = Outcome::kOk;
    std::int32_t partial = 0;
    if (it == seqs_.end()) {
      want = Outcome::kInvalid;
    } else {
      partial = it->second.num_tokens % bs_;
      if (partial != 0 && model_free() < 1) want = Outcome::kCapacity;
    }
    ra::ForkResult f;
    ASSERT_EQ(attempt([&] { f = mgr_.fork(id); }), want) << "op " << op_ << " fork(" << id << ")";
    if (want != Outcome::kOk) return;
    const ModelSeq& p = it->second;
    ASSERT_GE(f.child, next_id_);
    next_id_ = f.child + 1;
    const Blocks& got = mgr_.blocks(f.child);
    ASSERT_EQ(got.size(), p.blocks.size());
    const std::size_t full = static_cast<std::size_t>(p.num_tokens / bs_);
    ASSERT_TRUE(std::equal(p.blocks.begin(), p.blocks.begin() + static_cast<std::ptrdiff_t>(full),
                           got.begin()));
    if (partial != 0) {
      ASSERT_EQ(f.copies.size(), 1u);
      EXPECT_EQ(f.copies[0].src, p.blocks.back());
      EXPECT_EQ(f.copies[0].dst, got.back());
      EXPECT_EQ(f.copies[0].num_tokens, partial);
      expect_were_free({got.back()});
    } else {
      ASSERT_TRUE(f.copies.empty());
    }
    seqs_[f.child] = ModelSeq{p.num_tokens, got, p.num_tokens};
  }

  void do_release() {
    const ra::SequenceId id = pick_seq();
    const Outcome want = seqs_.count(id) ? Outcome::kOk : Outcome::kInvalid;
    ASSERT_EQ(attempt([&] { mgr_.release(id); }), want) << "op " << op_ << " release(" << id << ")";
    if (want == Outcome::kOk) seqs_.erase(id);
    ASSERT_EQ(mgr_.contains(id), false);
  }

  std::vector<ra::SequenceId> pick_batch() {
    std::vector<ra::SequenceId> batch(static_cast<std::size_t>(rand_int(0, 5)));
    for (ra::SequenceId& id : batch) id = pick_seq();
    return batch;
  }

  bool all_live(const std::vector<ra::SequenceId>& batch) const {
    return std::all_of(batch.begin(), batch.end(),
                       [&](ra::SequenceId id) { return seqs_.count(id) != 0; });
  }

  void do_export() {
    const std::vector<ra::SequenceId> batch = pick_batch();
    const std::int32_t max_blocks = rand_int(-1, 4);
    Outcome want = all_live(batch) && max_blocks >= 0 ? Outcome::kOk : Outcome::kInvalid;
    std::size_t longest = 0;
    if (want == Outcome::kOk) {
      for (ra::SequenceId id : batch) longest = std::max(longest, seqs_.at(id).blocks.size());
      if (max_blocks > 0 && longest > static_cast<std::size_t>(max_blocks))
        want = Outcome::kInvalid;
    }
    ra::BlockTables t;
    ASSERT_EQ(attempt([&] { t = mgr_.export_block_tables(batch, max_blocks); }), want)
        << "op " << op_ << " export";
    if (want != Outcome::kOk) return;
    const std::int32_t width =
        max_blocks > 0 ? max_blocks : static_cast<std::int32_t>(std::max<std::size_t>(longest, 1));
    ASSERT_EQ(t.num_seqs, static_cast<std::int32_t>(batch.size()));
    ASSERT_EQ(t.max_blocks_per_seq, width);
    std::vector<std::int32_t> table(batch.size() * static_cast<std::size_t>(width),
                                    ra::kBlockTablePadding);
    std::vector<std::int32_t> lens;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const ModelSeq& s = seqs_.at(batch[i]);
      std::copy(s.blocks.begin(), s.blocks.end(),
                table.begin() + static_cast<std::ptrdiff_t>(i * width));
      lens.push_back(s.num_tokens);
    }
    ASSERT_EQ(t.block_tables, table);
    ASSERT_EQ(t.context_lens, lens);
  }

  void do_take() {
    std::vector<ra::SequenceId> batch = pick_batch();
    if (!batch.empty() && rand_int(0, 9) == 0) batch.push_back(batch.front());  // duplicate
    std::set<ra::SequenceId> unique(batch.begin(), batch.end());
    const Outcome want =
        all_live(batch) && unique.size() == batch.size() ? Outcome::kOk : Outcome::kInvalid;
    std::vector<std::int32_t> slots;
    ASSERT_EQ(attempt([&] { slots = mgr_.take_slot_mapping(batch); }), want)
        << "op " << op_ << " take";
    if (want != Outcome::kOk) return;
    std::vector<std::int32_t> expected;
    for (ra::SequenceId id : batch) {
      ModelSeq& s = seqs_.at(id);
      for (std::int32_t t = s.pending_begin; t < s.num_tokens; ++t)
        expected.push_back(s.blocks[static_cast<std::size_t>(t / bs_)] * bs_ + t % bs_);
      s.pending_begin = s.num_tokens;
    }
    ASSERT_EQ(slots, expected);
  }

  // An outside holder (the future radix tree, a user): allocate or retain a block directly.
  void do_outside_acquire() {
    if (rand_int(0, 1) == 0) {
      const std::int32_t n = rand_int(0, 2);
      const Outcome want = n > model_free() ? Outcome::kCapacity : Outcome::kOk;
      Blocks got;
      ASSERT_EQ(attempt([&] { got = alloc_.allocate(n); }), want)
          << "op " << op_ << " allocate(" << n << ")";
      expect_were_free(got);
      for (ra::BlockId b : got) ++outside_[static_cast<std::size_t>(b)];
    } else {
      const ra::BlockId b = rand_int(-1, alloc_.num_blocks());
      const bool held = b >= 0 && b < alloc_.num_blocks() && holders(b) > 0;
      ASSERT_EQ(attempt([&] { alloc_.retain(b); }), held ? Outcome::kOk : Outcome::kInvalid)
          << "op " << op_ << " retain(" << b << ")";
      if (held) ++outside_[static_cast<std::size_t>(b)];
    }
  }

  void do_outside_release() {
    Blocks mine;
    for (ra::BlockId b = 0; b < alloc_.num_blocks(); ++b)
      for (std::int32_t k = 0; k < outside_[static_cast<std::size_t>(b)]; ++k) mine.push_back(b);
    if (mine.empty()) return;
    const ra::BlockId b =
        mine[static_cast<std::size_t>(rand_int(0, static_cast<int>(mine.size()) - 1))];
    ASSERT_EQ(attempt([&] { alloc_.release(b); }), Outcome::kOk);
    --outside_[static_cast<std::size_t>(b)];
  }

  void check_invariants() {
    ASSERT_EQ(alloc_.num_free() + alloc_.num_used(), alloc_.num_blocks()) << "op " << op_;
    const std::vector<std::int32_t> expected = all_holders();
    std::int32_t used = 0;
    bool counts_match = true;
    for (ra::BlockId b = 0; b < alloc_.num_blocks(); ++b) {
      counts_match &= alloc_.ref_count(b) == expected[static_cast<std::size_t>(b)];
      used += expected[static_cast<std::size_t>(b)] > 0;
    }
    ASSERT_TRUE(counts_match) << "op " << op_ << ": a reference count differs from its holders";
    ASSERT_EQ(alloc_.num_used(), used) << "op " << op_;
    ASSERT_EQ(mgr_.num_sequences(), seqs_.size()) << "op " << op_;
    for (const auto& s : seqs_) {
      ASSERT_TRUE(mgr_.contains(s.first));
      ASSERT_EQ(mgr_.context_len(s.first), s.second.num_tokens) << "op " << op_;
      ASSERT_EQ(mgr_.blocks(s.first), s.second.blocks) << "op " << op_;
    }
  }

  // The free list itself: exactly the blocks with no holder (none free and held at once).
  void check_free_list() {
    const std::vector<std::int32_t> counts = all_holders();
    std::set<ra::BlockId> expected;
    for (ra::BlockId b = 0; b < alloc_.num_blocks(); ++b)
      if (counts[static_cast<std::size_t>(b)] == 0) expected.insert(b);
    const Blocks drained = alloc_.allocate(alloc_.num_free());
    alloc_.release(drained);
    ASSERT_EQ(std::set<ra::BlockId>(drained.begin(), drained.end()), expected) << "op " << op_;
    ASSERT_EQ(drained.size(), expected.size()) << "op " << op_;
  }

  ra::BlockAllocator alloc_;
  ra::SequenceManager mgr_;
  std::int32_t bs_;
  std::mt19937 rng_;
  std::vector<std::int32_t> outside_;  // references held outside any sequence, per block
  std::map<ra::SequenceId, ModelSeq> seqs_;
  ra::SequenceId next_id_ = 0;
  std::map<Outcome, std::int64_t> outcomes_;
  int op_ = 0;
};

void run_model(std::int32_t num_blocks, std::int32_t block_size, std::uint32_t seed, int num_ops) {
  Harness h(num_blocks, block_size, seed);
  h.run(num_ops);
  // Every outcome, including each error kind, actually happened.
  EXPECT_GT(h.count(Outcome::kOk), num_ops / 2);
  EXPECT_GT(h.count(Outcome::kInvalid), 0);
  EXPECT_GT(h.count(Outcome::kCapacity), 0);
  // Appending into a shared partial block: impossible with block_size 1 (no partial blocks).
  if (block_size > 1) {
    EXPECT_GT(h.count(Outcome::kState), 0);
  }
}

}  // namespace

TEST(SequenceManagerModel, BlockSize4) { run_model(40, 4, 1, 100000); }
TEST(SequenceManagerModel, BlockSize1) { run_model(24, 1, 2, 30000); }
TEST(SequenceManagerModel, BlockSize16) { run_model(32, 16, 3, 30000); }
