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
  std::vector<double> tail_tokens, tail_closed, cost_closed, cost_open, child_closed, child_open;
  std::vector<std::uint8_t> share_if_closed, share_if_open;
};

inline void decide_sharing(const BatchRows& batch, const BlockTrie& trie, const CostModel& m,
                           SharingDecision& out) {
  const std::size_t num_nodes = trie.nodes.size();
  const double B = m.token_bytes;
  const double P = m.partial_bytes;
  const double F = m.segment_bytes;
  std::vector<double>& tail_tokens = out.tail_tokens;
  std::vector<double>& tail_closed = out.tail_closed;  // cost of tails that must open a new run
  tail_tokens.assign(num_nodes, 0.0);
  tail_closed.assign(num_nodes, 0.0);
  out.shared.assign(num_nodes, 0);
  // Sums in locals: through `out` they would be reloaded after every store to the arrays.
  double shared_cost = 0, unshared_cost = 0;
  for (std::int32_t q = 0; q < batch.num_seqs; ++q) {
    const std::int32_t len = batch.context_lens[q];
    if (len == 0) continue;
    unshared_cost += len * B + P + F;
    const std::int32_t tail =
        len - trie.full_blocks[static_cast<std::size_t>(q)] * batch.block_size;
    const std::int32_t node = trie.last_node[static_cast<std::size_t>(q)];
    const double tail_cost = tail > 0 ? tail * B + P + F : 0.0;
    if (node < 0) {
      shared_cost += tail_cost;  // no full block: the query is one private segment anyway
    } else {
      tail_tokens[static_cast<std::size_t>(node)] += tail;
      tail_closed[static_cast<std::size_t>(node)] += tail_cost;
    }
  }
  out.unshared_cost = unshared_cost;
  out.shared_cost = shared_cost;
  if (num_nodes == 0) return;

  // cost[n][open], choice[n][open]; children follow parents in pre-order, so a reverse sweep
  // sees every child before its parent.
  std::vector<double>& cost_closed = out.cost_closed;
  std::vector<double>& cost_open = out.cost_open;
  std::vector<double>& child_closed = out.child_closed;
  std::vector<double>& child_open = out.child_open;
  std::vector<std::uint8_t>& share_if_closed = out.share_if_closed;
  std::vector<std::uint8_t>& share_if_open = out.share_if_open;
  cost_closed.resize(num_nodes);
  cost_open.resize(num_nodes);
  child_closed.assign(num_nodes, 0.0);
  child_open.assign(num_nodes, 0.0);
  share_if_closed.resize(num_nodes);
  share_if_open.resize(num_nodes);
  for (std::size_t i = num_nodes; i-- > 0;) {
    const TrieNode& node = trie.nodes[i];
    const double k = node.num_queries();
    const double tokens = double(node.end_block - node.begin_block) * batch.block_size;
    const double priv_open = k * tokens * B + tail_tokens[i] * B + child_open[i];
    const double priv_closed = priv_open + k * (P + F);
    const double share = tokens * B + k * P + F + tail_closed[i] + child_closed[i];
    const bool allowed = m.enable_sharing && node.num_queries() >= 2;
    share_if_open[i] = allowed && share < priv_open;
    share_if_closed[i] = allowed && share < priv_closed;
    cost_open[i] = share_if_open[i] ? share : priv_open;
    cost_closed[i] = share_if_closed[i] ? share : priv_closed;
    if (node.parent >= 0) {
      child_closed[static_cast<std::size_t>(node.parent)] += cost_closed[i];
      child_open[static_cast<std::size_t>(node.parent)] += cost_open[i];
    } else {
      shared_cost += cost_closed[i];
    }
  }
  out.shared_cost = shared_cost;
  // Pre-order replay: a node's entry state is fixed by its parent's choice.
  for (std::size_t i = 0; i < num_nodes; ++i) {
    const std::int32_t parent = trie.nodes[i].parent;
    const bool open = parent >= 0 && !out.shared[static_cast<std::size_t>(parent)];
    out.shared[i] = open ? share_if_open[i] : share_if_closed[i];
  }
}

}  // namespace radix_attention::detail
