// libFuzzer target over the host side: each input is decoded into a pool, a block size, a mode
// (SequenceManager with or without a RadixTree) and a sequence of operations on BlockAllocator,
// RadixTree, SequenceManager and the batch planner, valid and invalid. After every operation the
// oracle (cache_oracle.hpp) checks the invariants of the model tests; an operation that throws
// must have been predicted to fail and must leave everything unchanged; at the end every block
// must return to the pool. Build with -DRADIX_ATTENTION_BUILD_FUZZERS=ON and clang; run e.g.
//   ./build-fuzz/tests/fuzz/cache_fuzz -max_total_time=60 tests/fuzz/corpus

#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "fuzz/cache_oracle.hpp"
#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"

namespace cache_fuzz {
namespace {

// Enough operations for long histories (evictions, forks of forks), few enough that one input
// runs in well under a millisecond.
constexpr int kMaxOps = 256;
constexpr std::size_t kMaxSequences = 8;

class Harness {
 public:
  explicit Harness(FuzzedDataProvider& in)
      : in_(in),
        alloc_(in.ConsumeIntegralInRange<std::int32_t>(1, 40)),
        tree_(alloc_, in.PickValueInArray({1, 2, 3, 16})),
        with_tree_(in.ConsumeBool()) {
    mgr_ = with_tree_ ? std::make_unique<ra::SequenceManager>(alloc_, tree_)
                      : std::make_unique<ra::SequenceManager>(alloc_, tree_.block_size());
    model_.block_size = tree_.block_size();
    model_.outside_refs.assign(static_cast<std::size_t>(alloc_.num_blocks()), 0);
    // Prompts start with a prefix of one of three bases over a 4-token alphabet, so that
    // prefixes are shared, diverge inside blocks and repeat across namespaces.
    for (auto& base : bases_) {
      for (std::int32_t i = 0; i < 5 * bs(); ++i) base.push_back(in_.ConsumeIntegralInRange(0, 3));
    }
  }

  void run() {
    for (int op = 0; op < kMaxOps && in_.remaining_bytes() > 0; ++op) {
      step();
      check_invariants(alloc_, tree_, *mgr_, model_, with_tree_);
    }
    teardown();
  }

 private:
  std::int32_t bs() const { return tree_.block_size(); }

  void step() {
    switch (in_.ConsumeIntegralInRange(0, 13)) {
      case 0:
        return with_tree_ ? add() : create();
      case 1:
        return create();
      case 2:
        return append();
      case 3:
        return fork();
      case 4:
        return end_sequence();
      case 5:
        return evict();
      case 6:
        return outside_allocate_or_release();
      case 7:
        return outside_invalid_block();
      case 8:
        return outside_insert();
      case 9:
        return outside_match();
      case 10:
        return dead_ids();
      case 11:
        return take_slots();
      case 12:
        return plan_batch();
      default:
        return outside_unmatch();
    }
  }

  // Runs `op`, which must throw `E` and change nothing.
  template <class E>
  void expect_failure(const std::function<void()>& op) {
    const std::string before = snapshot(alloc_, tree_, *mgr_, model_);
    try {
      op();
    } catch (const E&) {
      CACHE_FUZZ_CHECK(snapshot(alloc_, tree_, *mgr_, model_) == before);
      return;
    }
    fail(__FILE__, __LINE__, "an operation predicted to fail succeeded");
  }

  std::vector<ra::TokenId> random_tokens(std::int32_t max_tail) {
    const auto& base = bases_[in_.ConsumeIntegralInRange<std::size_t>(0, 2)];
    std::vector<ra::TokenId> t(base.begin(),
                               base.begin() + in_.ConsumeIntegralInRange<std::ptrdiff_t>(
                                                  0, static_cast<std::ptrdiff_t>(base.size())));
    const std::int32_t tail = in_.ConsumeIntegralInRange(0, max_tail);
    for (std::int32_t i = 0; i < tail; ++i) t.push_back(in_.ConsumeIntegralInRange(0, 3));
    return t;
  }

  // A live sequence, or -1 if there is none.
  ra::SequenceId pick_sequence() {
    if (model_.seqs.empty()) return -1;
    auto it = model_.seqs.begin();
    std::advance(it, in_.ConsumeIntegralInRange<std::size_t>(0, model_.seqs.size() - 1));
    return it->first;
  }

  void add() {
    if (model_.seqs.size() >= kMaxSequences) return;
    const ra::NamespaceId ns = in_.ConsumeIntegralInRange(0, 1);
    const std::vector<ra::TokenId> prompt = random_tokens(2 * bs());
    // add() always computes the last prompt token, so it matches at most the others.
    std::vector<ra::BlockId> matched;
    const std::size_t lookup = prompt.empty() ? 0 : prompt.size() - 1;
    const std::int32_t cached = tree_.peek_prefix(prompt.data(), lookup, ns, &matched).num_tokens;
    const std::int32_t need = blocks_for(static_cast<std::int32_t>(prompt.size()), bs()) -
                              static_cast<std::int32_t>(matched.size());
    if (need > alloc_.num_free() + freeable_blocks(alloc_, tree_, matched)) {
      return expect_failure<ra::CapacityError>([&] { mgr_->add(prompt, ns); });
    }
    const ra::SequenceId id = mgr_->add(prompt, ns);
    CACHE_FUZZ_CHECK(mgr_->cached_prefix_len(id) == cached);
    CACHE_FUZZ_CHECK(std::equal(matched.begin(), matched.end(), mgr_->blocks(id).begin()));
    model_.seqs[id] = SeqModel{ns, static_cast<std::int32_t>(prompt.size()), prompt, true, cached};
  }

  void create() {
    if (model_.seqs.size() >= kMaxSequences) return;
    const std::int32_t n = in_.ConsumeIntegralInRange(0, 3 * bs());
    if (blocks_for(n, bs()) > alloc_.num_free()) {
      return expect_failure<ra::CapacityError>([&] { mgr_->create(n); });
    }
    const ra::SequenceId id = mgr_->create(n);
    model_.seqs[id] = SeqModel{0, n, {}, n == 0, 0};
  }

  void append() {
    const ra::SequenceId id = pick_sequence();
    if (id < 0) return;
    SeqModel& s = model_.seqs.at(id);
    const bool plain = !with_tree_ || in_.ConsumeBool();
    const std::int32_t m = in_.ConsumeIntegralInRange(plain ? 0 : 1, bs() + 1);
    std::vector<ra::TokenId> more(static_cast<std::size_t>(m));
    for (auto& t : more) t = in_.ConsumeIntegralInRange(0, 3);
    const auto run = [&] { plain ? mgr_->append(id, m) : mgr_->append_tokens(id, more); };
    // Appending never evicts: the new blocks must be free.
    if (blocks_for(s.len + m, bs()) - blocks_for(s.len, bs()) > alloc_.num_free()) {
      return expect_failure<ra::CapacityError>(run);
    }
    const std::vector<ra::BlockId> before = mgr_->blocks(id);
    run();
    CACHE_FUZZ_CHECK(std::equal(before.begin(), before.end(), mgr_->blocks(id).begin()));
    s.len += m;
    if (plain) {
      s.complete = s.complete && m == 0;
    } else if (s.complete) {
      s.tokens.insert(s.tokens.end(), more.begin(), more.end());
    }
  }

  void fork() {
    const ra::SequenceId parent = pick_sequence();
    if (parent < 0 || model_.seqs.size() >= kMaxSequences) return;
    const SeqModel s = model_.seqs.at(parent);
    const bool partial = s.len % bs() != 0;
    if (partial && alloc_.num_free() == 0) {
      return expect_failure<ra::CapacityError>([&] { mgr_->fork(parent); });
    }
    const ra::ForkResult f = mgr_->fork(parent);
    const std::vector<ra::BlockId>& mine = mgr_->blocks(parent);
    const std::vector<ra::BlockId>& child = mgr_->blocks(f.child);
    // Full blocks are shared; a partial last block is copied into a fresh one.
    CACHE_FUZZ_CHECK(f.copies.size() == (partial ? 1u : 0u));
    CACHE_FUZZ_CHECK(std::equal(mine.begin(), mine.end() - (partial ? 1 : 0), child.begin()));
    if (partial) {
      CACHE_FUZZ_CHECK(f.copies[0].src == mine.back() && f.copies[0].dst == child.back());
      CACHE_FUZZ_CHECK(f.copies[0].dst != mine.back());
    }
    CACHE_FUZZ_CHECK(mgr_->prefix_node(f.child) == mgr_->prefix_node(parent));
    SeqModel c = s;
    c.pending_begin = c.len;  // the child starts with nothing to write
    model_.seqs[f.child] = c;
  }

  // finish (caches the full blocks whose ids are known), abort or release.
  void end_sequence() {
    const ra::SequenceId id = pick_sequence();
    if (id < 0) return;
    const SeqModel s = model_.seqs.at(id);
    model_.seqs.erase(id);
    switch (in_.ConsumeIntegralInRange(0, 2)) {
      case 0: {
        mgr_->finish(id);
        if (!with_tree_) return;
        const auto full = static_cast<std::size_t>(std::min<std::int32_t>(
            s.len / bs(), static_cast<std::int32_t>(s.tokens.size()) / bs()));
        const std::size_t tokens = full * static_cast<std::size_t>(bs());
        CACHE_FUZZ_CHECK(tree_.peek_prefix(s.tokens.data(), tokens, s.ns).num_tokens ==
                         static_cast<std::int32_t>(tokens));
        return;
      }
      case 1:
        return mgr_->abort(id);
      default:
        return mgr_->release(id);
    }
  }

  void evict() {
    const std::int32_t n = in_.ConsumeIntegralInRange(0, 8);
    const std::int32_t free_before = alloc_.num_free();
    const std::int32_t freed = tree_.evict(n);
    CACHE_FUZZ_CHECK(alloc_.num_free() - free_before == freed);
    // It stops short only when every unlocked node is gone.
    CACHE_FUZZ_CHECK(freed >= n || tree_.evictable_blocks() == 0);
  }

  // A plain allocator user: allocates a few blocks, or retains / releases one it holds.
  void outside_allocate_or_release() {
    std::vector<ra::BlockId> held;
    for (ra::BlockId b = 0; b < alloc_.num_blocks(); ++b) {
      if (model_.outside_refs[static_cast<std::size_t>(b)] > 0) held.push_back(b);
    }
    const int what = in_.ConsumeIntegralInRange(0, 2);
    if (what == 0 || held.empty()) {
      const std::int32_t n = in_.ConsumeIntegralInRange(0, 4);
      if (n > alloc_.num_free()) {
        return expect_failure<ra::CapacityError>([&] { alloc_.allocate(n); });
      }
      for (ra::BlockId b : alloc_.allocate(n)) ++model_.outside_refs[static_cast<std::size_t>(b)];
      return;
    }
    const ra::BlockId b = held[in_.ConsumeIntegralInRange<std::size_t>(0, held.size() - 1)];
    if (what == 1) {
      alloc_.retain(b);
      ++model_.outside_refs[static_cast<std::size_t>(b)];
    } else {
      alloc_.release(b);
      --model_.outside_refs[static_cast<std::size_t>(b)];
    }
  }

  // Ids that are free or not in the pool: retain, release and insert must reject them.
  void outside_invalid_block() {
    const ra::BlockId b = in_.ConsumeIntegralInRange(-2, alloc_.num_blocks() + 1);
    if (alloc_.contains(b) && alloc_.ref_count(b) > 0) return;
    expect_failure<ra::InvalidArgument>([&] { alloc_.retain(b); });
    expect_failure<ra::InvalidArgument>([&] { alloc_.release(b); });
    expect_failure<ra::InvalidArgument>([&] { alloc_.release(std::vector<ra::BlockId>{b}); });
    const std::vector<ra::TokenId> tokens(static_cast<std::size_t>(bs()), 7);
    expect_failure<ra::InvalidArgument>([&] { tree_.insert(tokens, {b}); });
  }

  // Caches fresh blocks under a prompt, handing the tree the only reference.
  void outside_insert() {
    const ra::NamespaceId ns = in_.ConsumeIntegralInRange(0, 1);
    std::vector<ra::TokenId> tokens = random_tokens(bs());
    tokens.resize(tokens.size() / static_cast<std::size_t>(bs()) * static_cast<std::size_t>(bs()));
    const auto n = static_cast<std::int32_t>(tokens.size()) / bs();
    if (n > alloc_.num_free()) return;
    const ra::InsertResult r = tree_.insert(tokens, alloc_.allocate(n), ns);
    CACHE_FUZZ_CHECK(r.num_tokens == static_cast<std::int32_t>(tokens.size()));
    CACHE_FUZZ_CHECK(tree_.token_range(r.node).end == r.num_tokens);
  }

  void outside_match() {
    const ra::NamespaceId ns = in_.ConsumeIntegralInRange(0, 1);
    const std::vector<ra::TokenId> tokens = random_tokens(bs());
    const std::int32_t cached = tree_.peek_prefix(tokens.data(), tokens.size(), ns).num_tokens;
    const ra::PrefixMatch m = tree_.match_prefix(tokens, ns);
    CACHE_FUZZ_CHECK(m.num_tokens == cached && tree_.token_range(m.node).end == cached);
    tree_.lock(m.node);
    alloc_.retain(m.blocks);
    model_.matches.push_back({m.node, m.blocks});
  }

  void outside_unmatch() {
    if (model_.matches.empty()) {
      // Unlocking a node nobody locked is a state error that changes nothing.
      const ra::NodeHandle root = tree_.root();
      if (tree_.lock_count(root) == 0) expect_failure<ra::StateError>([&] { tree_.unlock(root); });
      return;
    }
    const auto i = in_.ConsumeIntegralInRange<std::size_t>(0, model_.matches.size() - 1);
    tree_.unlock(model_.matches[i].node);
    alloc_.release(model_.matches[i].blocks);
    model_.matches.erase(model_.matches.begin() + static_cast<std::ptrdiff_t>(i));
  }

  void dead_ids() {
    const ra::SequenceId dead = model_.seqs.empty() ? 1 << 20 : model_.seqs.rbegin()->first + 1;
    expect_failure<ra::InvalidArgument>([&] { mgr_->finish(dead); });
    expect_failure<ra::InvalidArgument>([&] { mgr_->append(dead, 1); });
    expect_failure<ra::InvalidArgument>([&] { mgr_->fork(dead); });
    expect_failure<ra::InvalidArgument>([&] { mgr_->take_slot_mapping({dead}); });
    expect_failure<ra::InvalidArgument>([&] { tree_.lock(ra::NodeHandle{1 << 20}); });
  }

  // take_slot_mapping: the pending tokens' slots, in order, from the sequences' own blocks.
  void take_slots() {
    std::vector<ra::SequenceId> batch;
    for (const auto& entry : model_.seqs) {
      if (in_.ConsumeBool()) batch.push_back(entry.first);
    }
    if (!batch.empty() && in_.ConsumeBool()) {  // listed twice: rejected, nothing taken
      batch.push_back(batch.front());
      return expect_failure<ra::InvalidArgument>([&] { mgr_->take_slot_mapping(batch); });
    }
    const std::vector<std::int32_t> slots = mgr_->take_slot_mapping(batch);
    std::size_t next = 0;
    for (ra::SequenceId id : batch) {
      SeqModel& s = model_.seqs.at(id);
      const std::vector<ra::BlockId>& blocks = mgr_->blocks(id);
      for (std::int32_t t = s.pending_begin; t < s.len; ++t, ++next) {
        CACHE_FUZZ_CHECK(next < slots.size());
        CACHE_FUZZ_CHECK(slots[next] ==
                         blocks[static_cast<std::size_t>(t / bs())] * bs() + t % bs());
      }
      s.pending_begin = s.len;
    }
    CACHE_FUZZ_CHECK(next == slots.size());
  }

  // Kept small on purpose: the planner's API is moving to a stateful class.
  void plan_batch() {
    std::vector<ra::SequenceId> batch;
    for (int i = in_.ConsumeIntegralInRange(0, 6); i > 0 && !model_.seqs.empty(); --i) {
      batch.push_back(pick_sequence());  // repeats allowed: identical requests
    }
    const ra::BlockTables tables = mgr_->export_block_tables(batch);
    for (std::size_t r = 0; r < batch.size(); ++r) {
      const std::vector<ra::BlockId>& blocks = mgr_->blocks(batch[r]);
      const auto row =
          tables.block_tables.begin() + static_cast<std::ptrdiff_t>(r) * tables.max_blocks_per_seq;
      CACHE_FUZZ_CHECK(tables.context_lens[r] == mgr_->context_len(batch[r]));
      CACHE_FUZZ_CHECK(std::equal(blocks.begin(), blocks.end(), row));
      CACHE_FUZZ_CHECK(std::all_of(row + static_cast<std::ptrdiff_t>(blocks.size()),
                                   row + tables.max_blocks_per_seq,
                                   [](std::int32_t e) { return e == ra::kBlockTablePadding; }));
    }
    ra::PlannerOptions options;
    options.num_sms = in_.PickValueInArray({1, 4, 132});
    options.min_chunk_tokens = in_.PickValueInArray({1, 16, 256});
    options.chunk_alignment_tokens = in_.PickValueInArray({1, 16, 64});
    options.enable_sharing = in_.ConsumeBool();
    options.deterministic = in_.ConsumeBool();
    options.deterministic_chunk_tokens = in_.PickValueInArray({64, 128, 512});
    ra::PlanStats stats;
    const ra::RadixPlan plan = ra::plan(tables, bs(), options, &stats);
    ra::check_plan_for_batch(plan, tables, bs());  // throws if the plan is unsafe to execute
    CACHE_FUZZ_CHECK(options.enable_sharing || stats.num_shared_segments == 0);
    if (options.deterministic) check_absolute_chunks(plan, tables, options);
  }

  // Batch-invariant plans: every query's partials, in merge order, are exactly the absolute
  // chunk grid [0, c), [c, 2c), ... of its context, whatever the sharing.
  static void check_absolute_chunks(const ra::RadixPlan& plan, const ra::BlockTables& tables,
                                    const ra::PlannerOptions& options) {
    const std::int32_t c = options.deterministic_chunk_tokens;
    std::vector<std::int32_t> partial_chunk(plan.chunk_queries.size());
    for (std::int32_t k = 0; k < plan.num_chunks(); ++k) {
      for (auto p = plan.chunk_query_indptr[k]; p < plan.chunk_query_indptr[k + 1]; ++p) {
        partial_chunk[static_cast<std::size_t>(p)] = k;
      }
    }
    for (std::int32_t q = 0; q < plan.num_queries; ++q) {
      std::int32_t at = 0;
      for (auto i = plan.query_partial_indptr[q]; i < plan.query_partial_indptr[q + 1]; ++i) {
        const auto k = static_cast<std::size_t>(partial_chunk[static_cast<std::size_t>(
            plan.query_partials[static_cast<std::size_t>(i)])]);
        const std::int32_t len = tables.context_lens[static_cast<std::size_t>(q)];
        CACHE_FUZZ_CHECK(plan.chunk_token_begin[k] == at);
        CACHE_FUZZ_CHECK(plan.chunk_token_end[k] == std::min(len, at + c));
        at = plan.chunk_token_end[k];
      }
      CACHE_FUZZ_CHECK(at == tables.context_lens[static_cast<std::size_t>(q)]);
    }
  }

  // Everyone lets go: every block must come back to the pool.
  void teardown() {
    while (!model_.matches.empty()) {
      tree_.unlock(model_.matches.back().node);
      alloc_.release(model_.matches.back().blocks);
      model_.matches.pop_back();
    }
    for (const auto& entry : model_.seqs) mgr_->abort(entry.first);
    model_.seqs.clear();
    for (ra::BlockId b = 0; b < alloc_.num_blocks(); ++b) {
      for (; model_.outside_refs[static_cast<std::size_t>(b)] > 0;
           --model_.outside_refs[static_cast<std::size_t>(b)]) {
        alloc_.release(b);
      }
    }
    CACHE_FUZZ_CHECK(tree_.locked_blocks() == 0);
    tree_.evict(alloc_.num_blocks());
    CACHE_FUZZ_CHECK(tree_.cached_blocks() == 0 && alloc_.num_free() == alloc_.num_blocks());
    check_invariants(alloc_, tree_, *mgr_, model_, with_tree_);
  }

  FuzzedDataProvider& in_;
  // Destroyed in reverse: the manager before the tree before the allocator.
  ra::BlockAllocator alloc_;
  ra::RadixTree tree_;
  bool with_tree_;
  std::unique_ptr<ra::SequenceManager> mgr_;
  Model model_;
  std::vector<ra::TokenId> bases_[3];
};

}  // namespace
}  // namespace cache_fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  cache_fuzz::Harness(in).run();
  return 0;
}
