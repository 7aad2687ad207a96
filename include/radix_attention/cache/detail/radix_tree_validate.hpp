#pragma once
/// @file
/// RadixTree::validate: checks every invariant of the tree against itself and its allocator.
/// Included by radix_tree.hpp only.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace radix_attention {

inline void RadixTree::validate() const {
  auto check = [](bool ok, auto&&... what) {
    expects_that<StateError>(ok, "radix tree invariant violated: ", what...);
  };
  const auto bs = static_cast<std::size_t>(block_size_);
  const detail::RadixNode& root_node = node_ref(0);
  check(root_node.alive && root_node.parent == detail::kNoNode && root_node.blocks.empty() &&
            root_node.tokens.empty(),
        "the root must be live, parentless and empty");
  check(block_node_.size() == static_cast<std::size_t>(allocator_->num_blocks()),
        "block_node sized ", block_node_.size(), " for a pool of ", allocator_->num_blocks());

  std::vector<std::uint8_t> seen(block_node_.size(), 0);
  std::int32_t visited = 0, cached = 0, locked = 0;
  std::size_t candidates = 0;
  std::vector<NodeIndex> stack{0};
  while (!stack.empty()) {
    const NodeIndex i = stack.back();
    stack.pop_back();
    ++visited;
    check(visited <= num_nodes_, "more nodes reachable than the ", num_nodes_, " live ones");
    const detail::RadixNode& n = node_ref(i);
    check(n.alive, "node ", i, " is reachable but not live");
    check(n.own_locks >= 0 && n.lock_count >= n.own_locks, "node ", i, " lock counts ",
          n.lock_count, "/", n.own_locks);

    std::int32_t child_locks = 0, num_children = 0;
    NodeIndex prev = detail::kNoNode;
    for (NodeIndex c = n.first_child; c != detail::kNoNode; c = node_ref(c).next_sibling) {
      check(c >= 0 && static_cast<std::size_t>(c) < nodes_.size(), "bad child id ", c);
      const detail::RadixNode& k = node_ref(c);
      check(k.parent == i && k.prev_sibling == prev, "node ", c,
            " has broken parent/sibling links");
      check(k.start_token == n.end_token(), "node ", c, " starts at token ", k.start_token,
            ", its parent ends at ", n.end_token());
      check(i == 0 || k.ns == n.ns, "node ", c, " is in namespace ", k.ns, ", its parent in ",
            n.ns);
      check(k.last_access <= n.last_access, "node ", c, " was used after its parent");
      child_locks += k.lock_count;
      ++num_children;
      check(num_children <= n.num_children, "node ", i, " has more children than it counts");
      prev = c;
      stack.push_back(c);
    }
    check(num_children == n.num_children, "node ", i, " counts ", n.num_children, " children, has ",
          num_children);
    check(n.lock_count == n.own_locks + child_locks, "node ", i, " lock count ", n.lock_count,
          " != own ", n.own_locks, " + children's ", child_locks);
    check(policy_->contains(i) == is_candidate(i), "node ", i,
          is_candidate(i) ? " is an unlocked leaf missing from" : " must not be in",
          " the eviction policy");
    candidates += is_candidate(i) ? 1u : 0u;
    if (i == 0) continue;

    check(!n.blocks.empty() && n.tokens.size() == n.blocks.size() * bs, "node ", i, " has ",
          n.tokens.size(), " tokens for ", n.blocks.size(), " blocks");
    check(n.key_hash == detail::child_key_hash(n.parent, n.ns, n.tokens.data(), block_size_) &&
              find_child(n.parent, n.tokens.data(), n.ns) == i,
          "node ", i, " is not found by its key (stale index or two children with one key)");
    for (BlockId b : n.blocks) {
      check(allocator_->contains(b), "node ", i, " caches block ", b, " outside the pool");
      const auto ub = static_cast<std::size_t>(b);
      check(seen[ub] == 0, "block ", b, " is cached twice");
      seen[ub] = 1;
      check(block_node_[ub] == i, "block ", b, " is cached in node ", i, " but mapped to node ",
            block_node_[ub]);
      check(allocator_->ref_count(b) >= 1, "block ", b, " is cached but free in the allocator");
    }
    cached += static_cast<std::int32_t>(n.blocks.size());
    if (n.lock_count > 0) locked += static_cast<std::int32_t>(n.blocks.size());
  }
  check(visited == num_nodes_, num_nodes_, " live nodes counted, ", visited, " reachable");
  std::int32_t live = 0;
  for (const detail::RadixNode& n : nodes_) live += n.alive ? 1 : 0;
  check(live == num_nodes_ && free_nodes_.size() + static_cast<std::size_t>(live) == nodes_.size(),
        "node storage: ", live, " live, ", free_nodes_.size(), " free, ", nodes_.size(), " slots");
  for (std::size_t b = 0; b < block_node_.size(); ++b) {
    check((block_node_[b] != detail::kNoNode) == (seen[b] != 0), "block ", b, " mapped to node ",
          block_node_[b], " but cached ", int{seen[b]}, " times");
    check(scratch_[b] == 0, "scratch count of block ", b, " left at ", scratch_[b]);
  }
  std::size_t indexed = 0;
  for (const auto& entry : index_) {
    for (NodeIndex c = entry.second; c != detail::kNoNode; c = node_ref(c).hash_next) {
      check(node_ref(c).alive && node_ref(c).key_hash == entry.first, "index entry of node ", c,
            " is stale");
      ++indexed;
    }
  }
  check(indexed + 1 == static_cast<std::size_t>(num_nodes_), "index holds ", indexed, " nodes for ",
        num_nodes_ - 1, " non-root nodes");
  check(policy_->size() == candidates, "policy holds ", policy_->size(), " candidates, the tree ",
        candidates);
  check(cached == cached_blocks_ && locked == locked_blocks_, "block counters cached ",
        cached_blocks_, " locked ", locked_blocks_, ", recounted ", cached, " / ", locked);
  check(evictable_blocks() + locked_blocks_ == cached_blocks_ && evictable_blocks() >= 0,
        "evictable + locked != cached");
}

}  // namespace radix_attention
