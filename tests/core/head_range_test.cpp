// tensor_parallel_heads and slice_kv_heads (host only): every rank's heads for TP 1..8 with
// and without kv-head replication cover the model's heads exactly once (query heads) or
// `replicas` times (kv heads), each query head keeps its kv head; slices keep the full
// cache's strides; typed errors naming the argument for every invalid input.

#include "radix_attention/core/head_range.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "radix_attention/core/views.hpp"
#include "support/expect_error.hpp"

namespace radix_attention {
namespace {

struct Model {
  int num_q_heads;
  int num_kv_heads;
};

TEST(TensorParallelHeads, RanksCoverEveryHeadAndKeepTheirKvHead) {
  for (const Model m : {Model{32, 8}, Model{32, 2}, Model{8, 8}, Model{16, 1}, Model{64, 4},
                        Model{8, 2}, Model{12, 4}}) {
    for (int tp : {1, 2, 4, 8}) {
      if (m.num_q_heads % tp != 0) continue;
      if (m.num_kv_heads % tp != 0 && tp % m.num_kv_heads != 0) continue;
      SCOPED_TRACE(::testing::Message()
                   << "Hq=" << m.num_q_heads << " Hkv=" << m.num_kv_heads << " tp=" << tp);
      const int group = m.num_q_heads / m.num_kv_heads;
      std::vector<int> q_owner(m.num_q_heads, 0), kv_holders(m.num_kv_heads, 0);
      for (int r = 0; r < tp; ++r) {
        const TensorParallelHeads h = tensor_parallel_heads(m.num_q_heads, m.num_kv_heads, tp, r);
        EXPECT_EQ(h.q.count, m.num_q_heads / tp);
        EXPECT_EQ(h.kv.count, std::max(1, m.num_kv_heads / tp));
        EXPECT_EQ(h.replicas, tp > m.num_kv_heads ? tp / m.num_kv_heads : 1);
        ASSERT_EQ(h.q.count % h.kv.count, 0);
        const int local_group = h.q.count / h.kv.count;
        for (int i = 0; i < h.q.count; ++i) {
          const int head = h.q.first + i;
          ASSERT_GE(head, 0);
          ASSERT_LT(head, m.num_q_heads);
          ++q_owner[head];
          // The rank's local kv head of this query head is the model's kv head of it.
          EXPECT_EQ(h.kv.first + i / local_group, head / group) << "q head " << head;
        }
        for (int i = 0; i < h.kv.count; ++i) ++kv_holders[h.kv.first + i];
      }
      for (int c : q_owner) EXPECT_EQ(c, 1);
      for (int c : kv_holders) EXPECT_EQ(c, tp > m.num_kv_heads ? tp / m.num_kv_heads : 1);
    }
  }
}

TEST(TensorParallelHeads, ReplicatedKvHeadsExamples) {
  // 8 kv heads at TP 8: one each, nothing replicated.
  TensorParallelHeads h = tensor_parallel_heads(32, 8, 8, 5);
  EXPECT_EQ(h.q.first, 20);
  EXPECT_EQ(h.q.count, 4);
  EXPECT_EQ(h.kv.first, 5);
  EXPECT_EQ(h.kv.count, 1);
  EXPECT_EQ(h.replicas, 1);
  // 2 kv heads at TP 4: ranks 0, 1 share kv head 0; ranks 2, 3 kv head 1.
  for (int r = 0; r < 4; ++r) {
    h = tensor_parallel_heads(32, 2, 4, r);
    EXPECT_EQ(h.q.first, 8 * r);
    EXPECT_EQ(h.q.count, 8);
    EXPECT_EQ(h.kv.first, r / 2);
    EXPECT_EQ(h.kv.count, 1);
    EXPECT_EQ(h.replicas, 2);
  }
  // TP 1 is the whole model.
  h = tensor_parallel_heads(28, 4, 1, 0);
  EXPECT_EQ(h.q.first, 0);
  EXPECT_EQ(h.q.count, 28);
  EXPECT_EQ(h.kv.first, 0);
  EXPECT_EQ(h.kv.count, 4);
}

void expect_invalid(int hq, int hkv, int tp, int rank, const char* needle) {
  test::expect_error<InvalidArgument>([&] { (void)tensor_parallel_heads(hq, hkv, tp, rank); },
                                      needle);
}

TEST(TensorParallelHeads, RejectsBadArguments) {
  expect_invalid(32, 0, 2, 0, "num_kv_heads = 0");
  expect_invalid(30, 8, 2, 0, "num_q_heads = 30");
  expect_invalid(0, 1, 1, 0, "num_q_heads = 0");
  expect_invalid(32, 8, 0, 0, "tp_size = 0");
  expect_invalid(24, 8, 16, 0, "multiple of tp_size = 16");
  expect_invalid(24, 8, 3, 0, "tp_size = 3");  // divides 24 but neither divides 8 nor is 8k
  expect_invalid(48, 4, 6, 0, "tp_size = 6");  // 6 > 4 kv heads but not a multiple of 4
  expect_invalid(32, 8, 4, 4, "rank = 4");
  expect_invalid(32, 8, 4, -1, "rank = -1");
}

TEST(SliceKvHeads, KeepsTheFullCachesStrides) {
  std::vector<float> pool(2 * 3 * 16 * 8 * 64);  // real storage: the offsets stay inside it
  const int blocks = 3, bs = 16, heads = 8, D = 64;
  PagedKvCacheView<float> nhd{pool.data(), pool.data() + pool.size() / 2, blocks, bs, heads, D};
  const PagedKvCacheView<float> s = slice_kv_heads(nhd, 2, 4);
  EXPECT_EQ(s.k, pool.data() + 2 * D);
  EXPECT_EQ(s.v, nhd.v + 2 * D);
  EXPECT_EQ(s.num_kv_heads, 4);
  EXPECT_EQ(s.num_blocks, blocks);
  EXPECT_EQ(s.block_size, bs);
  EXPECT_EQ(s.head_dim, D);
  EXPECT_EQ(s.head_stride, D);
  EXPECT_EQ(s.token_stride, std::int64_t{heads} * D);
  EXPECT_EQ(s.block_stride, std::int64_t{bs} * heads * D);
  EXPECT_FALSE(is_dense_nhd(s));  // 4 of 8 heads: no longer the slice's own dense layout

  // HND [blocks, heads, block, dim]: a head is block_size * D elements further.
  PagedKvCacheView<float> hnd = nhd;
  hnd.head_stride = std::int64_t{bs} * D;
  hnd.token_stride = D;
  hnd.block_stride = std::int64_t{heads} * bs * D;
  const PagedKvCacheView<float> h = slice_kv_heads(hnd, 7, 1);
  EXPECT_EQ(h.k, pool.data() + 7 * bs * D);
  EXPECT_EQ(h.head_stride, hnd.head_stride);
  EXPECT_EQ(h.token_stride, hnd.token_stride);
  EXPECT_EQ(h.block_stride, hnd.block_stride);
  EXPECT_EQ(h.num_kv_heads, 1);

  // The whole range is the cache itself (strides made explicit).
  const PagedKvCacheView<float> all = slice_kv_heads(nhd, 0, heads);
  EXPECT_EQ(all.k, nhd.k);
  EXPECT_TRUE(is_dense_nhd(all));

  // Writable views slice alike.
  PagedKvCacheMutView<float> mut{pool.data(), pool.data() + pool.size() / 2, blocks, bs, heads, D};
  const PagedKvCacheMutView<float> m = slice_kv_heads(mut, 3, 2);
  EXPECT_EQ(m.k, pool.data() + 3 * D);
  EXPECT_EQ(m.num_kv_heads, 2);
  EXPECT_EQ(m.token_stride, std::int64_t{heads} * D);
}

TEST(SliceKvHeads, RejectsRangesOutsideTheCache) {
  std::vector<float> pool(16 * 4 * 64);
  const PagedKvCacheView<float> c{pool.data(), pool.data(), 1, 16, 4, 64};
  auto expect_rejected = [&](int first, int count, const char* needle) {
    test::expect_error<InvalidArgument>([&] { (void)slice_kv_heads(c, first, count); }, needle);
  };
  expect_rejected(-1, 1, "first = -1");
  expect_rejected(4, 1, "first = 4");
  expect_rejected(0, 0, "count = 0");
  expect_rejected(2, 3, "count = 3");
}

}  // namespace
}  // namespace radix_attention
