#pragma once
// Shared by the prefill GPU tests: a varlen batch of requests (new rows after a cached prefix),
// its block tables with every request's blocks drawn from a shuffled pool, and the copy of an
// NHD K/V pool into the HND or combined layout with the view strides that describe it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "radix_attention/core/views.hpp"

namespace radix_attention::test::prefill {

enum class Layout { kNhd, kHnd, kCombined };

struct Request {
  int q_len;
  int prefix;  // cached tokens before the new ones: kv_len = prefix + q_len
};

/// The batch's block tables with every request's blocks drawn from a shuffled pool.
struct Tables {
  std::vector<std::int32_t> table, context_lens, qo_indptr;
  int max_blocks = 1;
  std::int64_t row_stride = 1;
  int num_blocks = 0;
  int total_q = 0;
  int max_q_len = 0;
};

inline Tables make_tables(const std::vector<Request>& requests, int bs, std::mt19937_64& rng) {
  Tables t;
  int needed = 0;
  t.qo_indptr.push_back(0);
  for (const Request& r : requests) {
    const int kv = r.prefix + r.q_len;
    t.context_lens.push_back(kv);
    t.max_blocks = std::max(t.max_blocks, (kv + bs - 1) / bs);
    needed += (kv + bs - 1) / bs;
    t.total_q += r.q_len;
    t.max_q_len = std::max(t.max_q_len, r.q_len);
    t.qo_indptr.push_back(t.total_q);
  }
  t.row_stride = t.max_blocks + 2;  // a stride that is not the row length
  t.num_blocks = needed + 3;        // spare blocks nobody uses
  std::vector<std::int32_t> pool(t.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  t.table.assign(requests.size() * t.row_stride, -1);
  std::size_t next = 0;
  for (std::size_t s = 0; s < requests.size(); ++s) {
    for (int i = 0; i < (t.context_lens[s] + bs - 1) / bs; ++i)
      t.table[s * t.row_stride + i] = pool[next++];
  }
  return t;
}

/// Copies NHD K (or V) into the case's layout; returns the buffer and sets the view's strides.
template <class T>
std::pair<std::vector<T>, std::vector<T>> to_layout(const std::vector<T>& k,
                                                    const std::vector<T>& v, Layout layout,
                                                    int blocks, int bs, int heads, int D,
                                                    PagedKvCacheView<T>& view,
                                                    std::size_t& v_offset) {
  const std::int64_t token = std::int64_t{heads} * D, block = token * bs;
  if (layout == Layout::kNhd) {
    v_offset = 0;
    return {k, v};
  }
  std::vector<T> kk, vv;
  auto at = [&](std::int64_t b, std::int64_t o, std::int64_t h) {
    return b * block + o * token + h * D;
  };
  if (layout == Layout::kHnd) {
    view.head_stride = std::int64_t{bs} * D;
    view.token_stride = D;
    view.block_stride = block;
    kk.resize(k.size());
    vv.resize(v.size());
    for (int b = 0; b < blocks; ++b)
      for (int o = 0; o < bs; ++o)
        for (int h = 0; h < heads; ++h)
          for (int d = 0; d < D; ++d) {
            const std::int64_t dst = b * block + h * view.head_stride + o * D + d;
            kk[dst] = k[at(b, o, h) + d];
            vv[dst] = v[at(b, o, h) + d];
          }
    v_offset = 0;
    return {kk, vv};
  }
  // Combined [blocks, 2, block, heads, dim]: one buffer, V at +block elements.
  view.head_stride = D;
  view.token_stride = token;
  view.block_stride = 2 * block;
  kk.resize(2 * k.size());
  for (int b = 0; b < blocks; ++b)
    for (std::int64_t e = 0; e < block; ++e) {
      kk[2 * b * block + e] = k[b * block + e];
      kk[2 * b * block + block + e] = v[b * block + e];
    }
  v_offset = static_cast<std::size_t>(block);
  return {kk, {}};
}

/// Keys each packed query row sees (causal aligned to the end, or the whole context): the
/// "context length" of the row for the shared decode checker.
inline std::vector<std::int32_t> visible_keys(const std::vector<Request>& requests, const Tables& t,
                                              bool causal) {
  std::vector<std::int32_t> visible(t.total_q);
  for (std::size_t s = 0; s < requests.size(); ++s) {
    const int q_len = requests[s].q_len, kv = t.context_lens[s];
    for (int i = 0; i < q_len; ++i)
      visible[t.qo_indptr[s] + i] = causal ? std::clamp(kv - q_len + i + 1, 0, kv) : kv;
  }
  return visible;
}

}  // namespace radix_attention::test::prefill
