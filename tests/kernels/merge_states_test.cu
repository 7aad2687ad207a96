// merge_states against a float64 host merge (CSR lists with empty, all-empty and -inf partials)
// and end to end: reference partial states of sub-ranges merged on the GPU equal the reference
// over the whole range. Validation tests run without a GPU.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "radix_attention/ops/merge_states.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

class MergeStatesTest : public test::GpuTest {};

template <class T>
void check_random_merge(int num_queries, int num_heads, int head_dim, std::uint64_t seed,
                        double tol, int max_partials_per_query = 6, int out_offset = 0) {
  std::mt19937_64 rng(seed);
  const int num_partials = 3 * num_queries + 5;
  std::vector<float> p_out =
      test::random_vector<float>(std::size_t(num_partials) * num_heads * head_dim, rng);
  std::vector<float> p_lse =
      test::random_vector<float>(std::size_t(num_partials) * num_heads, rng, -20.f, 20.f);
  // A few empty partials (lse = -inf); their rows hold garbage the merge must ignore.
  for (int i = 0; i < num_partials * num_heads; i += 7) p_lse[i] = -INFINITY;
  std::vector<std::int32_t> indptr{0}, ids;
  std::uniform_int_distribution<int> count(0, max_partials_per_query), pick(0, num_partials - 1);
  for (int qi = 0; qi < num_queries; ++qi) {
    const int n = qi == 1 ? 0 : count(rng);  // query 1 has no partial at all
    for (int j = 0; j < n; ++j) ids.push_back(pick(rng));
    indptr.push_back(static_cast<std::int32_t>(ids.size()));
  }
  DeviceBuffer<float> d_out_p(p_out), d_lse_p(p_lse), d_lse(std::size_t(num_queries) * num_heads);
  DeviceBuffer<std::int32_t> d_indptr(indptr),
      d_ids(ids.empty() ? std::vector<std::int32_t>{0} : ids);
  // out_offset > 0 shifts the output off its vector alignment (the kernel's scalar path).
  DeviceBuffer<T> d_out(std::size_t(num_queries) * num_heads * head_dim + out_offset);
  d_out.poison();
  d_lse.poison();
  merge_states<T>(d_out_p.data(), d_lse_p.data(), num_partials, num_heads, head_dim,
                  d_indptr.data(), d_ids.data(), num_queries, d_out.data() + out_offset,
                  d_lse.data(), nullptr);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> out = d_out.download();
  out.erase(out.begin(), out.begin() + out_offset);
  const std::vector<float> lse = d_lse.download();
  for (int qi = 0; qi < num_queries; ++qi) {
    for (int h = 0; h < num_heads; ++h) {
      double m = kNegInf;
      for (int j = indptr[qi]; j < indptr[qi + 1]; ++j)
        m = std::max(m, double(p_lse[ids[j] * num_heads + h]));
      double sum = 0.0;
      std::vector<double> ref(head_dim, 0.0);
      if (m != kNegInf) {
        for (int j = indptr[qi]; j < indptr[qi + 1]; ++j) {
          const double l = p_lse[ids[j] * num_heads + h];
          if (l == kNegInf) continue;
          const double w = std::exp(l - m);
          sum += w;
          for (int d = 0; d < head_dim; ++d)
            ref[d] += w * p_out[(std::size_t(ids[j]) * num_heads + h) * head_dim + d];
        }
      }
      const std::size_t row = std::size_t(qi) * num_heads + h;
      for (int d = 0; d < head_dim; ++d) {
        const double r = sum > 0 ? ref[d] / sum : 0.0;
        const double o = static_cast<float>(out[row * head_dim + d]);
        ASSERT_TRUE(std::isfinite(o)) << "query " << qi << " head " << h << " d " << d;
        ASSERT_NEAR(o, r, tol * std::max(1.0, std::abs(r)))
            << "query " << qi << " head " << h << " d " << d;
      }
      if (sum > 0) {
        EXPECT_NEAR(lse[row], m + std::log(sum), 1e-5 * std::max(1.0, std::abs(m)));
      } else {
        EXPECT_TRUE(std::isinf(lse[row]) && lse[row] < 0) << "query " << qi;
      }
    }
  }
}

TEST_F(MergeStatesTest, RandomCsrFloat) { check_random_merge<float>(37, 4, 128, 1, 1e-5); }
TEST_F(MergeStatesTest, RandomCsrHalf) { check_random_merge<__half>(20, 3, 64, 2, 1e-2); }
TEST_F(MergeStatesTest, RandomCsrBf16OddHeadDim) {
  check_random_merge<__nv_bfloat16>(9, 2, 80, 3, 1e-2);
}
// Long lists (a shared prefix cut into many chunks): several batches of loads per row, the
// running maximum growing across batches, and list lengths that leave partial batches.
TEST_F(MergeStatesTest, LongListsEveryDtype) {
  check_random_merge<float>(23, 4, 128, 11, 1e-5, 40);
  check_random_merge<__half>(17, 8, 64, 12, 1e-2, 33);
  check_random_merge<__nv_bfloat16>(13, 4, 256, 13, 1e-2, 67);
}
// head_dim not a multiple of 4, and outputs off 8-byte alignment: one dim per thread.
TEST_F(MergeStatesTest, ScalarPathForOddShapesAndAlignment) {
  check_random_merge<float>(11, 3, 50, 21, 1e-5, 9);
  check_random_merge<__nv_bfloat16>(11, 3, 128, 22, 1e-2, 9, /*out_offset=*/1);
  check_random_merge<__half>(7, 2, 7, 23, 1e-2, 5, /*out_offset=*/3);
}

// Partial states from the reference over chunks of a range, merged on the GPU, equal the
// reference over the whole range: the contract the radix and split-KV kernels rely on.
TEST_F(MergeStatesTest, MergedChunksEqualWholeRange) {
  std::mt19937_64 rng(7);
  const int D = 64, bs = 4, ctx = 300, num_blocks = 80;
  const std::vector<float> k = test::random_vector<float>(std::size_t(num_blocks) * bs * D, rng);
  const std::vector<float> v = test::random_vector<float>(std::size_t(num_blocks) * bs * D, rng);
  const std::vector<float> q = test::random_vector<float>(D, rng, -3.f, 3.f);
  std::vector<std::int32_t> table(num_blocks);
  for (int i = 0; i < num_blocks; ++i) table[i] = (i * 37) % num_blocks;  // a permutation
  reference::HostPagedCache<float> cache{k.data(), v.data(), num_blocks, bs, 1, D};
  const int cuts[] = {0, 0, 17, 150, 150, 299, 300};  // includes empty chunks
  const int num_partials = 6;
  std::vector<float> p_out(std::size_t(num_partials) * D), p_lse(num_partials);
  std::vector<double> row(D);
  for (int p = 0; p < num_partials; ++p) {
    p_lse[p] = static_cast<float>(reference::attend_range(q.data(), cache, 0, table.data(), cuts[p],
                                                          cuts[p + 1], 0.125, row.data()));
    for (int d = 0; d < D; ++d) p_out[p * D + d] = static_cast<float>(row[d]);
  }
  std::vector<double> whole(D);
  const double whole_lse =
      reference::attend_range(q.data(), cache, 0, table.data(), 0, ctx, 0.125, whole.data());
  DeviceBuffer<float> d_p_out(p_out), d_p_lse(p_lse), d_out(D), d_lse(1);
  DeviceBuffer<std::int32_t> d_indptr(std::vector<std::int32_t>{0, num_partials}),
      d_ids(std::vector<std::int32_t>{5, 0, 3, 1, 4, 2});
  merge_states<float>(d_p_out.data(), d_p_lse.data(), num_partials, 1, D, d_indptr.data(),
                      d_ids.data(), 1, d_out.data(), d_lse.data(), nullptr);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> out = d_out.download();
  for (int d = 0; d < D; ++d) EXPECT_NEAR(out[d], whole[d], 1e-5) << d;
  EXPECT_NEAR(d_lse.download()[0], whole_lse, 1e-5);
}

TEST(MergeStatesValidation, RejectsBadArguments) {
  float* f = reinterpret_cast<float*>(std::uintptr_t{4096});
  std::int32_t* i = reinterpret_cast<std::int32_t*>(std::uintptr_t{4096});
  EXPECT_THROW(merge_states<float>(f, f, 4, 2, 64, i, i, 3, nullptr, nullptr, nullptr),
               InvalidArgument);
  EXPECT_THROW(merge_states<float>(f, f, 4, 2, 64, nullptr, i, 3, f, nullptr, nullptr),
               InvalidArgument);
  EXPECT_THROW(merge_states<float>(nullptr, f, 4, 2, 64, i, i, 3, f, nullptr, nullptr),
               InvalidArgument);
  EXPECT_THROW(merge_states<float>(f, f, 4, 0, 64, i, i, 3, f, nullptr, nullptr), InvalidArgument);
  EXPECT_THROW(merge_states<float>(f, f, 4, 2, 0, i, i, 3, f, nullptr, nullptr), InvalidArgument);
  EXPECT_THROW(merge_states<float>(f, f, -1, 2, 64, i, i, 3, f, nullptr, nullptr), InvalidArgument);
  EXPECT_NO_THROW(merge_states<float>(nullptr, nullptr, 0, 2, 64, nullptr, nullptr, 0, nullptr,
                                      nullptr, nullptr));
}

}  // namespace
}  // namespace radix_attention
