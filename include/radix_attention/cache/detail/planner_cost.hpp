#pragma once
/// @file
/// Batch planner internals: the cost model's sharing decision over the block trie (included by
/// cache/batch_planner.hpp; not a public header). The model itself is documented on
/// PlannerOptions.
///
/// Exact minimisation by dynamic programming over the trie. All queries through a node share the
/// same ancestors and therefore the same state on entering it: either their previous segment is a
/// private run still open (a private node's tokens then extend it for free) or it is closed (a
/// private node opens a new run: one more partial and segment per query). So
/// cost(node, open) = min(shared, private) with
///   shared  = L*B + k*P + F + (private tails after it) + sum cost(child, closed)
///   private = k*L*B + (open ? 0 : k*(P + F)) + (tail tokens)*B + sum cost(child, open)
/// where L = node tokens, k = its queries, B = KV bytes per token, P = bytes of one partial
/// state written and read back, F = fixed cost of one segment. Ties go to private.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "radix_attention/cache/detail/planner_trie.hpp"

namespace radix_attention::detail {

struct CostModel {
  double token_bytes = 0;    ///< B: K + V bytes of one token over all kv heads
  double partial_bytes = 0;  ///< P: one partial state (all q heads, output + LSE), written + read
  double segment_bytes = 0;  ///< F: fixed cost of one segment
  double merge_bytes = 0;    ///< M: fixed cost of the merge step, paid once if any query merges
  bool enable_sharing = true;
};

struct SharingDecision {
  std::vector<std::uint8_t> shared;  ///< per trie node
  double shared_cost = 0;            ///< modelled cost of the decision, merge step excluded
  double unshared_cost = 0;          ///< modelled cost with every node private
  // Working arrays of decide_sharing, per trie node (kept so a planner's steps reuse them).
  std::vector<double> tail_tokens, tail_closed, child_closed, child_open;
  std::vector<std::uint8_t> share_if_closed, share_if_open;
};

inline void decide_sharing(const BatchRows& batch, const BlockTrie& trie, const CostModel& m,
                           SharingDecision& out) {
  const std::size_t num_nodes = trie.nodes.size();
  const double B = m.token_bytes;
  const double P = m.partial_bytes;
  const double F = m.segment_bytes;
  // Raw pointers and sums in locals throughout: through the vectors, every byte store (the
  // decisions) could alias them, and the compiler would reload them after each one.
  out.tail_tokens.assign(num_nodes, 0.0);
  out.tail_closed.assign(num_nodes, 0.0);  // cost of tails that must open a new run
  out.shared.assign(num_nodes, 0);
  double* const tail_tokens = out.tail_tokens.data();
  double* const tail_closed = out.tail_closed.data();
  const std::int32_t* const lens = batch.context_lens;
  const std::int32_t* const full = trie.full_blocks.data();
  const std::int32_t* const last = trie.last_node.data();
  const std::int32_t bs = batch.block_size;
  double shared_cost = 0, unshared_cost = 0;
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t len = lens[q];
    if (len == 0) continue;
    unshared_cost += len * B + P + F;
    const std::int32_t tail = len - full[q] * bs;
    const std::int32_t node = last[q];
    const double tail_cost = tail > 0 ? tail * B + P + F : 0.0;
    if (node < 0) {
      shared_cost += tail_cost;  // no full block: the query is one private segment anyway
    } else {
      tail_tokens[node] += tail;
      tail_closed[node] += tail_cost;
    }
  }
  out.unshared_cost = unshared_cost;
  out.shared_cost = shared_cost;
  if (num_nodes == 0) return;

  // cost[n][open], choice[n][open]; children follow parents in pre-order, so a reverse sweep
  // sees every child before its parent.
  out.child_closed.assign(num_nodes, 0.0);
  out.child_open.assign(num_nodes, 0.0);
  out.share_if_closed.resize(num_nodes);
  out.share_if_open.resize(num_nodes);
  double* const child_closed = out.child_closed.data();
  double* const child_open = out.child_open.data();
  std::uint8_t* const share_if_closed = out.share_if_closed.data();
  std::uint8_t* const share_if_open = out.share_if_open.data();
  const TrieNode* const nodes = trie.nodes.data();
  const bool enable_sharing = m.enable_sharing;
  // Siblings are summed into their parent in a register (flushed when the parent changes):
  // the same additions in the same order as through memory, without a store-to-load chain
  // when a node has many children (a shared prefix over hundreds of private suffixes).
  std::int32_t acc_parent = -1;
  double acc_closed = 0, acc_open = 0;
  for (std::size_t i = num_nodes; i-- > 0;) {
    const TrieNode& node = nodes[i];
    if (node.parent != acc_parent) {
      if (acc_parent >= 0) {  // before child_closed[i] is read: the previous node may be i's child
        child_closed[acc_parent] = acc_closed;
        child_open[acc_parent] = acc_open;
      }
      acc_parent = node.parent;
      if (acc_parent >= 0) {
        acc_closed = child_closed[acc_parent];
        acc_open = child_open[acc_parent];
      }
    }
    const double k = node.num_queries();
    const double tokens = double(node.end_block - node.begin_block) * bs;
    const double priv_open = k * tokens * B + tail_tokens[i] * B + child_open[i];
    const double priv_closed = priv_open + k * (P + F);
    const double share = tokens * B + k * P + F + tail_closed[i] + child_closed[i];
    const bool allowed = enable_sharing && node.num_queries() >= 2;
    const bool open_shares = allowed && share < priv_open;
    const bool closed_shares = allowed && share < priv_closed;
    share_if_open[i] = open_shares;
    share_if_closed[i] = closed_shares;
    const double cost_open = open_shares ? share : priv_open;
    const double cost_closed = closed_shares ? share : priv_closed;
    if (node.parent >= 0) {
      acc_closed += cost_closed;
      acc_open += cost_open;
    } else {
      shared_cost += cost_closed;
    }
  }
  if (acc_parent >= 0) {
    child_closed[acc_parent] = acc_closed;
    child_open[acc_parent] = acc_open;
  }
  out.shared_cost = shared_cost;
  // Pre-order replay: a node's entry state is fixed by its parent's choice.
  std::uint8_t* const shared = out.shared.data();
  for (std::size_t i = 0; i < num_nodes; ++i) {
    const std::int32_t parent = nodes[i].parent;
    const bool open = parent >= 0 && !shared[parent];
    shared[i] = open ? share_if_open[i] : share_if_closed[i];
  }
}

}  // namespace radix_attention::detail
