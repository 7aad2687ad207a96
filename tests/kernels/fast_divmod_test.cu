// FastDivmod (kernels/detail/fast_divmod.cuh) against `/` and `%` on the host (its div / mod
// are __host__ __device__, the same code the kernels run): every divisor up to 4096 and those
// around each power of two up to 2^31 - 1, each with the numerators where a floor changes
// (multiples of d and their neighbours), the top of the range and random ones. No GPU needed.

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/kernels/detail/fast_divmod.cuh"

namespace radix_attention::detail {
namespace {

constexpr int kMaxNumerator = 0x7FFFFFFF;

/// Numerators to try for divisor d: 0, 1, the top of the range, multiples of d and their
/// neighbours (small and near the top), and random values.
std::vector<int> numerators(int d, std::mt19937_64& rng) {
  std::vector<int> n = {0, 1, kMaxNumerator, kMaxNumerator - 1};
  const std::int64_t top = kMaxNumerator / d;
  for (std::int64_t k : {std::int64_t(1), std::int64_t(2), std::int64_t(3), top - 1, top}) {
    for (std::int64_t delta = -1; delta <= 1; ++delta) {
      const std::int64_t v = k * d + delta;
      if (v >= 0 && v <= kMaxNumerator) n.push_back(static_cast<int>(v));
    }
  }
  std::uniform_int_distribution<int> any(0, kMaxNumerator);
  for (int i = 0; i < 64; ++i) n.push_back(any(rng));
  return n;
}

void expect_exact(int d, std::mt19937_64& rng) {
  const FastDivmod f(d);
  for (int n : numerators(d, rng)) {
    const int q = f.div(n);
    ASSERT_EQ(q, n / d) << "n = " << n << ", d = " << d;
    ASSERT_EQ(f.mod(n, q), n % d) << "n = " << n << ", d = " << d;
  }
}

TEST(FastDivmod, SmallDivisorsExactly) {
  std::mt19937_64 rng(1);
  for (int d = 1; d <= 4096; ++d) expect_exact(d, rng);
}

TEST(FastDivmod, DivisorsAroundPowersOfTwo) {
  std::mt19937_64 rng(2);
  for (int k = 1; k <= 31; ++k) {
    const std::int64_t p = std::int64_t(1) << k;
    for (std::int64_t d : {p - 1, p, p + 1, p + p / 3}) {
      if (d >= 1 && d <= kMaxNumerator) expect_exact(static_cast<int>(d), rng);
    }
  }
}

TEST(FastDivmod, EveryNumeratorOfTheKernelsCommonDivisors) {
  // Block sizes and chunks per head the kernels see most: all numerators below 2^20.
  for (int d : {1, 3, 8, 16, 32, 64, 128, 9}) {
    const FastDivmod f(d);
    for (int n = 0; n < (1 << 20); ++n) {
      if (f.div(n) != n / d) FAIL() << "n = " << n << ", d = " << d;
    }
  }
}

TEST(FastDivmod, DefaultDividesByOne) {
  const FastDivmod f;
  EXPECT_EQ(f.div(kMaxNumerator), kMaxNumerator);
  EXPECT_EQ(f.mod(12345, f.div(12345)), 0);
}

}  // namespace
}  // namespace radix_attention::detail
