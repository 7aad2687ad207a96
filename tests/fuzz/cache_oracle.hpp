#pragma once
// The oracle of the host-side fuzzer (cache_fuzz.cpp): the invariants the randomized model
// tests (tests/cache/*_model_test.cpp) check after every operation, in a form that needs no test
// framework, plus the harness's model of each live sequence and of the blocks held outside the
// manager and the tree. A violation prints what failed and aborts, which libFuzzer records as a
// crash with its input.

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/error.hpp"

namespace cache_fuzz {

namespace ra = radix_attention;

[[noreturn]] inline void fail(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "%s:%d: cache fuzzer: %s\n", file, line, what.c_str());
  std::abort();
}

#define CACHE_FUZZ_CHECK(cond) \
  ((cond) ? (void)0 : ::cache_fuzz::fail(__FILE__, __LINE__, "check failed: " #cond))

/// What the harness expects of a live sequence.
struct SeqModel {
  ra::NamespaceId ns = 0;
  std::int32_t len = 0;
  std::vector<ra::TokenId> tokens;  ///< the ids recorded so far (all of them while `complete`)
  bool complete = true;             ///< false after create(n > 0) or a plain append()
  std::int32_t pending_begin = 0;   ///< first token take_slot_mapping() has not returned yet
};

/// A prefix matched by someone other than the manager: its blocks retained and its node locked,
/// as RadixTree asks of anyone who keeps cached blocks.
struct OutsideMatch {
  ra::NodeHandle node;
  std::vector<ra::BlockId> blocks;
};

/// The harness's whole model: sequences and the references held outside the manager and tree.
struct Model {
  std::int32_t block_size = 1;
  std::map<ra::SequenceId, SeqModel> seqs;
  std::vector<std::int32_t> outside_refs;  ///< by block id: plain allocator holds
  std::vector<OutsideMatch> matches;
};

inline std::int32_t blocks_for(std::int32_t tokens, std::int32_t block_size) {
  return (tokens + block_size - 1) / block_size;
}

// Canonical text of the tree: nodes in key order with their ranges, locks, LRU times and blocks.
inline void describe_tree(const ra::RadixTree& tree, ra::NodeHandle node, std::ostringstream& out) {
  out << '[' << tree.node_namespace(node) << ' ' << tree.token_range(node).begin << '-'
      << tree.token_range(node).end << " L" << tree.lock_count(node) << " t"
      << tree.last_access(node) << ':';
  for (ra::BlockId b : tree.node_blocks(node)) out << ' ' << b;
  std::vector<ra::NodeHandle> kids = tree.children(node);
  std::sort(kids.begin(), kids.end(), [&](ra::NodeHandle a, ra::NodeHandle b) {
    return std::make_pair(tree.node_namespace(a), tree.edge_tokens(a)) <
           std::make_pair(tree.node_namespace(b), tree.edge_tokens(b));
  });
  for (ra::NodeHandle kid : kids) describe_tree(tree, kid, out);
  out << ']';
}

/// Everything observable about the allocator, the tree and the manager's sequences: equal
/// before and after an operation that threw (the strong guarantee).
inline std::string snapshot(const ra::BlockAllocator& alloc, const ra::RadixTree& tree,
                            const ra::SequenceManager& mgr, const Model& model) {
  std::ostringstream out;
  out << "free " << alloc.num_free() << " refs";
  for (ra::BlockId b = 0; b < alloc.num_blocks(); ++b) out << ' ' << alloc.ref_count(b);
  const ra::RadixTreeStats s = tree.stats();
  out << " | nodes " << s.num_nodes << " cached " << s.cached_blocks << " locked "
      << s.locked_blocks << " hits " << s.hit_tokens << " misses " << s.miss_tokens << " evicted "
      << s.evicted_blocks << ' ';
  describe_tree(tree, tree.root(), out);
  out << " | seqs " << mgr.num_sequences();
  for (const auto& [id, seq] : model.seqs) {
    if (!mgr.contains(id)) continue;
    out << " (" << id << " len " << mgr.context_len(id) << " node " << mgr.prefix_node(id).id
        << " blocks";
    for (ra::BlockId b : mgr.blocks(id)) out << ' ' << b;
    out << ')';
  }
  return out.str();
}

/**
 * Checks, after every operation:
 *  - the tree's own invariants (RadixTree::validate: links, keys, lock counts, counters, one
 *    reference per cached block, the eviction policy's candidates, LRU order);
 *  - reference counts balance: every block's count equals its holders (the tree, each live
 *    sequence listing it, outside holds and matches), and the free blocks are exactly those with
 *    no holder;
 *  - every live sequence has the modelled length and ceil(len / block_size) blocks, and its
 *    prefix node (with a tree) is live; every outside match's node is live and locked.
 */
inline void check_invariants(const ra::BlockAllocator& alloc, const ra::RadixTree& tree,
                             const ra::SequenceManager& mgr, const Model& model, bool with_tree) {
  try {
    tree.validate();
  } catch (const ra::StateError& e) {
    fail(__FILE__, __LINE__, e.what());
  }
  std::vector<std::int32_t> holders = model.outside_refs;
  for (ra::BlockId b = 0; b < alloc.num_blocks(); ++b) {
    holders[static_cast<std::size_t>(b)] += tree.holds(b) ? 1 : 0;
  }
  for (const OutsideMatch& m : model.matches) {
    CACHE_FUZZ_CHECK(tree.contains(m.node) && tree.lock_count(m.node) > 0);
    for (ra::BlockId b : m.blocks) ++holders[static_cast<std::size_t>(b)];
  }
  CACHE_FUZZ_CHECK(mgr.num_sequences() == model.seqs.size());
  for (const auto& [id, seq] : model.seqs) {
    CACHE_FUZZ_CHECK(mgr.contains(id));
    CACHE_FUZZ_CHECK(mgr.context_len(id) == seq.len);
    const std::vector<ra::BlockId>& blocks = mgr.blocks(id);
    CACHE_FUZZ_CHECK(blocks.size() ==
                     static_cast<std::size_t>(blocks_for(seq.len, model.block_size)));
    for (ra::BlockId b : blocks) ++holders[static_cast<std::size_t>(b)];
    if (with_tree) CACHE_FUZZ_CHECK(tree.contains(mgr.prefix_node(id)));
  }
  std::int32_t unheld = 0;
  for (ra::BlockId b = 0; b < alloc.num_blocks(); ++b) {
    const std::int32_t expected = holders[static_cast<std::size_t>(b)];
    if (alloc.ref_count(b) != expected) {
      fail(__FILE__, __LINE__,
           ra::detail::concat("block ", b, " has ", alloc.ref_count(b), " references, ", expected,
                              " holders"));
    }
    unheld += expected == 0 ? 1 : 0;
  }
  CACHE_FUZZ_CHECK(alloc.num_free() == unheld);
}

/// Blocks that evicting would return to the free list for add(tokens, ns): cached in an
/// unlocked node, held by no one but the tree, and not part of the prefix add() matches (which
/// it locks before evicting). SequenceManager::add must succeed exactly when its new blocks fit
/// in the free ones plus these.
inline std::int32_t freeable_blocks(const ra::BlockAllocator& alloc, const ra::RadixTree& tree,
                                    const std::vector<ra::BlockId>& matched) {
  std::int32_t n = 0;
  for (ra::BlockId b = 0; b < alloc.num_blocks(); ++b) {
    if (tree.holds_unlocked(b) && alloc.ref_count(b) == 1 &&
        std::find(matched.begin(), matched.end(), b) == matched.end()) {
      ++n;
    }
  }
  return n;
}

}  // namespace cache_fuzz
