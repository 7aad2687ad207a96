#pragma once
// Shared by the radix-decode GPU tests: a batch described by shared pieces of context, its
// block tables with random block placement, and the radix plan of those pieces (one segment
// per piece, as a planner that shares every common piece would emit).

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "radix_attention/plan/radix_plan.hpp"
#include "support/radix_plan_from_segments.hpp"

namespace radix_attention::test {

/// A batch described by shared pieces: query q's context is the concatenation of the pieces
/// `queries[q]` (ids into `piece_len`). Queries holding the same piece hold the same KV blocks
/// there (a piece other than a query's last must be a multiple of the block size).
struct Shape {
  std::vector<int> piece_len;
  std::vector<std::vector<int>> queries;
};

/// Host side of a batch: block tables with random placement, and the radix plan of its pieces.
struct HostBatch {
  int num_queries = 0;
  int max_blocks = 1;
  std::int64_t row_stride = 0;
  int num_blocks = 0;
  std::vector<std::int32_t> tables, context_lens;
  RadixPlan plan;
};

inline HostBatch build_batch(const Shape& shape, int bs, int max_chunk_tokens,
                             std::mt19937_64& rng) {
  HostBatch b;
  b.num_queries = static_cast<int>(shape.queries.size());
  std::vector<int> piece_blocks(shape.piece_len.size());
  int total_blocks = 0;
  for (std::size_t i = 0; i < shape.piece_len.size(); ++i) {
    piece_blocks[i] = (shape.piece_len[i] + bs - 1) / bs;
    total_blocks += piece_blocks[i];
  }
  b.num_blocks = total_blocks + 7;
  std::vector<std::int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::vector<std::int32_t>> blocks_of(shape.piece_len.size());
  std::size_t next = 0;
  for (std::size_t i = 0; i < shape.piece_len.size(); ++i) {
    for (int j = 0; j < piece_blocks[i]; ++j) blocks_of[i].push_back(pool[next++]);
  }
  for (const auto& pieces : shape.queries) {
    int len = 0;
    for (int id : pieces) len += shape.piece_len[id];
    b.context_lens.push_back(len);
    b.max_blocks = std::max(b.max_blocks, (len + bs - 1) / bs);
  }
  b.row_stride = b.max_blocks + 2;
  b.tables.assign(static_cast<std::size_t>(b.num_queries) * b.row_stride, -1);
  // Segments: one per piece, row = its first holder, begin = its offset there.
  std::map<int, RadixSegmentSpec> segs;
  for (int q = 0; q < b.num_queries; ++q) {
    int at = 0;
    for (int id : shape.queries[q]) {
      for (int j = 0; j < piece_blocks[id]; ++j) {
        b.tables[q * b.row_stride + at / bs + j] = blocks_of[id][j];
      }
      auto it = segs.find(id);
      if (it == segs.end()) {
        it = segs.emplace(id, RadixSegmentSpec{q, at, at + shape.piece_len[id], {}}).first;
      }
      it->second.queries.push_back(q);
      at += shape.piece_len[id];
    }
  }
  std::vector<RadixSegmentSpec> list;
  for (auto& [id, seg] : segs) {
    if (seg.end > seg.begin) list.push_back(seg);
  }
  b.plan = radix_plan_from_segments(b.num_queries, list, max_chunk_tokens);
  b.plan.batch_fingerprint = 0x1234;
  return b;
}

/// `n` queries sharing a `shared`-token prefix (piece 0), each with a private suffix.
inline Shape shared_prefix(int n, int shared, const std::vector<int>& private_lens) {
  Shape s;
  s.piece_len.push_back(shared);
  for (int q = 0; q < n; ++q) {
    s.piece_len.push_back(private_lens[q % private_lens.size()]);
    s.queries.push_back({0, q + 1});
  }
  return s;
}

/// Two levels: a global prefix, `groups` group prefixes, `per_group` private suffixes each.
inline Shape two_level(int groups, int per_group, int global, int group_len, int private_len) {
  Shape s;
  s.piece_len.push_back(global);
  for (int g = 0; g < groups; ++g) {
    const int gid = static_cast<int>(s.piece_len.size());
    s.piece_len.push_back(group_len);
    for (int i = 0; i < per_group; ++i) {
      s.piece_len.push_back(private_len + i);
      s.queries.push_back({0, gid, static_cast<int>(s.piece_len.size()) - 1});
    }
  }
  return s;
}

inline Shape no_sharing(const std::vector<int>& lens) {
  Shape s;
  for (std::size_t i = 0; i < lens.size(); ++i) {
    s.piece_len.push_back(lens[i]);
    s.queries.push_back({static_cast<int>(i)});
  }
  return s;
}

}  // namespace radix_attention::test
