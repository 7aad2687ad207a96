// The float64 reference itself: hand-computed values, natural-log LSE, empty ranges, paging
// (block placement does not change the result) and the exactness of merging partial states.

#include "radix_attention/reference/attention.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace radix_attention::reference {
namespace {

TEST(ReferenceAttention, TwoTokensByHand) {
  // head_dim 2, block_size 1, blocks placed in reverse: token 0 -> block 1, token 1 -> block 0.
  const std::vector<float> k{0.f, 1.f, /*block 1:*/ 1.f, 0.f};
  const std::vector<float> v{5.f, 6.f, /*block 1:*/ 1.f, 2.f};
  const std::vector<std::int32_t> table{1, 0};
  const std::vector<float> q{2.f, 0.f};
  HostPagedCache<float> cache{k.data(), v.data(), 2, 1, 1, 2};
  double out[2];
  const double lse = attend_range(q.data(), cache, 0, table.data(), 0, 2, 0.5, out);
  // scores: token 0: 0.5 * 2 = 1, token 1: 0.  LSE = log(e^1 + e^0), natural log.
  const double expected_lse = std::log(std::exp(1.0) + 1.0);
  EXPECT_NEAR(lse, expected_lse, 1e-15);
  const double p0 = std::exp(1.0 - expected_lse), p1 = std::exp(0.0 - expected_lse);
  EXPECT_NEAR(out[0], p0 * 1.0 + p1 * 5.0, 1e-15);
  EXPECT_NEAR(out[1], p0 * 2.0 + p1 * 6.0, 1e-15);
}

TEST(ReferenceAttention, EmptyRangeIsZeroWithMinusInfinityLse) {
  const std::vector<float> kv(8, 1.f);
  const std::vector<std::int32_t> table{0};
  const std::vector<float> q(4, 1.f);
  HostPagedCache<float> cache{kv.data(), kv.data(), 1, 2, 1, 4};
  double out[4] = {7, 7, 7, 7};
  const double lse = attend_range(q.data(), cache, 0, table.data(), 1, 1, 1.0, out);
  EXPECT_TRUE(std::isinf(lse) && lse < 0);
  for (double x : out) EXPECT_EQ(x, 0.0);
}

TEST(ReferenceAttention, RejectsOutOfRangeBlocksAndBadRanges) {
  const std::vector<float> kv(8, 1.f);
  const std::vector<std::int32_t> table{3};
  const std::vector<float> q(4, 1.f);
  HostPagedCache<float> cache{kv.data(), kv.data(), 1, 2, 1, 4};
  double out[4];
  EXPECT_THROW(attend_range(q.data(), cache, 0, table.data(), 0, 1, 1.0, out), InvalidArgument);
  EXPECT_THROW(attend_range(q.data(), cache, 0, table.data(), 2, 1, 1.0, out), InvalidArgument);
  EXPECT_THROW(attend_range(q.data(), cache, 1, table.data(), 0, 1, 1.0, out), InvalidArgument);
}

// Same logical sequence stored contiguously (block size = context) and scattered over blocks
// of 3 tokens gives the same output; and merging partial states of sub-ranges is exact.
TEST(ReferenceAttention, PagingInvariantAndPartialsMergeExactly) {
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> dist(-1, 1);
  const int D = 8, ctx = 20, bs = 3, heads = 2, blocks = 7;
  std::vector<double> k_flat(ctx * heads * D), v_flat(ctx * heads * D), q(heads * 2 * D);
  for (auto* vec : {&k_flat, &v_flat, &q})
    for (double& x : *vec) x = dist(rng);
  const std::vector<std::int32_t> scatter{4, 0, 6, 2, 5, 1, 3};  // token t -> block scatter[t / 3]
  std::vector<double> k_paged(blocks * bs * heads * D, 99.0), v_paged(k_paged);
  for (int t = 0; t < ctx; ++t) {
    for (int i = 0; i < heads * D; ++i) {
      const std::size_t dst = (std::size_t(scatter[t / bs]) * bs + t % bs) * heads * D + i;
      k_paged[dst] = k_flat[t * heads * D + i];
      v_paged[dst] = v_flat[t * heads * D + i];
    }
  }
  HostPagedCache<double> flat{k_flat.data(), v_flat.data(), 1, ctx, heads, D};
  HostPagedCache<double> paged{k_paged.data(), v_paged.data(), blocks, bs, heads, D};
  const std::int32_t zero = 0;
  const int num_q_heads = 4;  // GQA group of 2
  std::vector<double> out_flat(num_q_heads * D), out_paged(num_q_heads * D), lse_flat(num_q_heads),
      lse_paged(num_q_heads);
  paged_decode(q.data(), flat, &zero, 1, &ctx, 1, num_q_heads, 0.3, out_flat.data(),
               lse_flat.data());
  paged_decode(q.data(), paged, scatter.data(), 7, &ctx, 1, num_q_heads, 0.3, out_paged.data(),
               lse_paged.data());
  for (int i = 0; i < num_q_heads * D; ++i) EXPECT_NEAR(out_flat[i], out_paged[i], 1e-14);
  for (int h = 0; h < num_q_heads; ++h) EXPECT_NEAR(lse_flat[h], lse_paged[h], 1e-14);

  // Partials over [0, 7) and [7, 20) of query head 3 (kv head 1), merged by their LSEs.
  std::vector<double> a(D), b(D);
  const double la = attend_range(q.data() + 3 * D, paged, 1, scatter.data(), 0, 7, 0.3, a.data());
  const double lb = attend_range(q.data() + 3 * D, paged, 1, scatter.data(), 7, 20, 0.3, b.data());
  const double m = std::max(la, lb);
  const double lse = m + std::log(std::exp(la - m) + std::exp(lb - m));
  EXPECT_NEAR(lse, lse_paged[3], 1e-13);
  for (int d = 0; d < D; ++d) {
    EXPECT_NEAR(std::exp(la - lse) * a[d] + std::exp(lb - lse) * b[d], out_paged[3 * D + d], 1e-14);
  }
}

}  // namespace
}  // namespace radix_attention::reference
