#pragma once
/// @file
/// The replaceable eviction policy of RadixTree, and its default: least recently used.
/// Plain C++17.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <utility>
#include <vector>

namespace radix_attention {

/// @brief What a policy knows about one eviction candidate: an unlocked leaf of the radix tree
/// (not the root). Evicting it returns its blocks; its parent may become a candidate next.
struct EvictionCandidate {
  std::int32_t node = -1;          ///< node id (NodeHandle::id), unique among the candidates
  std::uint64_t last_access = 0;   ///< logical time of the last match/insert through the node
  std::uint64_t access_count = 0;  ///< matches/inserts through the node since it was created
  std::int32_t num_blocks = 0;     ///< blocks the node caches
};

/**
 * @brief Orders the tree's eviction candidates.
 *
 * The tree keeps the candidate set incrementally: it calls add() when a node becomes an
 * unlocked leaf, remove() when it stops being one (gains a child, is locked, is evicted) and
 * touch() when a candidate is accessed. victim() names the candidate to evict next. A policy
 * therefore never walks the tree, and the tree's matching code never depends on the policy
 * (LFU, priorities, size-aware policies fit the same interface).
 *
 * Calls are made only with consistent arguments (add of a non-member, remove/touch of a
 * member); implementations should make each O(log n) or better.
 */
class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  /// @brief `candidate.node` became an eviction candidate.
  virtual void add(const EvictionCandidate& candidate) = 0;
  /// @brief `node` is no longer a candidate.
  virtual void remove(std::int32_t node) = 0;
  /// @brief The candidate `candidate.node` was accessed; its statistics changed.
  virtual void touch(const EvictionCandidate& candidate) {
    remove(candidate.node);
    add(candidate);
  }
  /// @brief The candidate to evict next, or -1 if there is none.
  virtual std::int32_t victim() const = 0;
  /// @brief True if `node` is a candidate (used by RadixTree::validate).
  virtual bool contains(std::int32_t node) const = 0;
  /// @brief Number of candidates.
  virtual std::size_t size() const = 0;
};

/**
 * @brief Least recently used first: candidates ordered by (last_access, node id).
 *
 * A std::set gives O(log n) add/remove/touch and O(1) victim; the per-node key is kept in a
 * vector indexed by node id so that remove() does not need the caller to repeat it.
 */
class LruPolicy final : public EvictionPolicy {
 public:
  void add(const EvictionCandidate& candidate) override {
    const auto id = static_cast<std::size_t>(candidate.node);
    if (id >= key_.size()) key_.resize(id + 1, kAbsent);
    order_.emplace(candidate.last_access, candidate.node);
    key_[id] = candidate.last_access;
  }

  void remove(std::int32_t node) override {
    const auto id = static_cast<std::size_t>(node);
    if (id >= key_.size() || key_[id] == kAbsent) return;
    order_.erase({key_[id], node});
    key_[id] = kAbsent;
  }

  void touch(const EvictionCandidate& candidate) override {
    remove(candidate.node);
    add(candidate);
  }

  std::int32_t victim() const override { return order_.empty() ? -1 : order_.begin()->second; }

  bool contains(std::int32_t node) const override {
    const auto id = static_cast<std::size_t>(node);
    return node >= 0 && id < key_.size() && key_[id] != kAbsent;
  }

  std::size_t size() const override { return order_.size(); }

 private:
  // Logical times start at 1 and never reach the maximum, so it can mark "not a candidate".
  static constexpr std::uint64_t kAbsent = std::numeric_limits<std::uint64_t>::max();

  std::set<std::pair<std::uint64_t, std::int32_t>> order_;
  std::vector<std::uint64_t> key_;  // by node id
};

}  // namespace radix_attention
