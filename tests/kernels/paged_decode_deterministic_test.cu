// Batch-invariant paged decode (PagedDecodeOptions::deterministic): a sequence's output is
// bitwise the same alone, in a batch of 48 and at any position of it; every dtype, GQA groups
// 4 and 7, contexts 0 .. 6000, block sizes 1 and 16. Also checked against the float64 reference.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;

struct Shape {
  int num_q_heads, num_kv_heads, head_dim;
};

template <class T>
void run_invariance(const Shape& s, int bs, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "dtype bytes " << sizeof(T) << " block " << bs << " heads " << s.num_q_heads
               << "/" << s.num_kv_heads << " D " << s.head_dim);
  std::mt19937_64 rng(seed);
  const int n = 48;
  std::vector<std::int32_t> lens(n);
  for (int i = 0; i < n; ++i) lens[i] = i == 0 ? 0 : i == 1 ? 1 : static_cast<int>(rng() % 6000);
  int width = 1;
  for (int len : lens) width = std::max(width, (len + bs - 1) / bs);
  // Every sequence its own blocks, placed at random in the pool.
  const int pool = n * width;
  std::vector<std::int32_t> perm(pool);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<std::int32_t> table(static_cast<std::size_t>(n) * width);
  std::copy(perm.begin(), perm.end(), table.begin());
  const std::size_t kv = static_cast<std::size_t>(pool) * bs * s.num_kv_heads * s.head_dim;
  const int row_elems = s.num_q_heads * s.head_dim;
  const auto qkv = test::random_qkv<T>(static_cast<std::size_t>(n) * row_elems, kv, rng);
  DeviceBuffer<T> d_k(qkv.k), d_v(qkv.v);
  const PagedKvCacheView<T> cache{d_k.data(), d_v.data(), pool, bs, s.num_kv_heads, s.head_dim};
  PagedDecodeOptions options;
  options.deterministic = true;

  // Decodes sequences `order` (their rows of table / lens / q) as one batch.
  auto decode = [&](const std::vector<int>& order) {
    const int m = static_cast<int>(order.size());
    std::vector<std::int32_t> t(static_cast<std::size_t>(m) * width), l(m);
    std::vector<T> q(static_cast<std::size_t>(m) * row_elems);
    for (int i = 0; i < m; ++i) {
      std::copy_n(table.begin() + static_cast<std::ptrdiff_t>(order[i]) * width, width,
                  t.begin() + static_cast<std::ptrdiff_t>(i) * width);
      l[i] = lens[order[i]];
      std::copy_n(qkv.q.begin() + static_cast<std::ptrdiff_t>(order[i]) * row_elems, row_elems,
                  q.begin() + static_cast<std::ptrdiff_t>(i) * row_elems);
    }
    DeviceBuffer<std::int32_t> d_t(t), d_l(l);
    DeviceBuffer<T> d_q(q), d_out(q.size());
    d_out.poison();
    const BlockTableView view{d_t.data(), d_l.data(), m, width, width, -1};
    const std::size_t ws = paged_decode_workspace_bytes(s.num_q_heads, cache, view, options);
    DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
    paged_decode(d_q.data(), s.num_q_heads, cache, view, d_out.data(), nullptr, work.data(), ws,
                 nullptr, options);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
    return d_out.download();
  };

  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  const std::vector<T> batch = decode(order);
  std::vector<double> ref(batch.size());
  reference::HostPagedCache<T> host{qkv.k.data(), qkv.v.data(),   pool,
                                    bs,           s.num_kv_heads, s.head_dim};
  reference::paged_decode(qkv.q.data(), host, table.data(), width, lens.data(), n, s.num_q_heads,
                          1.0 / std::sqrt(double(s.head_dim)), ref.data(), nullptr);
  test::expect_decode_matches(batch, nullptr, ref, nullptr, lens.data(),
                              {n, s.num_q_heads, s.head_dim},
                              std::is_same_v<T, float> ? 1e-5 : 1e-2);
  std::vector<int> shuffled = order;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  const std::vector<T> moved = decode(shuffled);
  std::vector<int> position(n);
  for (int i = 0; i < n; ++i) position[shuffled[i]] = i;
  const auto same = [&](const std::vector<T>& a, int i, const std::vector<T>& b, int j) {
    return std::memcmp(a.data() + static_cast<std::ptrdiff_t>(i) * row_elems,
                       b.data() + static_cast<std::ptrdiff_t>(j) * row_elems,
                       sizeof(T) * static_cast<std::size_t>(row_elems)) == 0;
  };
  int failures = 0;
  for (int i = 0; i < n && failures < 5; ++i) {
    const std::vector<T> alone = decode({i});
    if (!same(batch, i, alone, 0) || !same(batch, i, moved, position[i])) {
      ++failures;
      ADD_FAILURE() << "sequence " << i << " (context " << lens[i]
                    << "): output bits differ between batches (alone " << same(batch, i, alone, 0)
                    << ", moved " << same(batch, i, moved, position[i]) << ")";
    }
  }
}

class PagedDecodeDeterministicTest : public test::GpuTest {};

TEST_F(PagedDecodeDeterministicTest, EveryDtype) {
  run_invariance<__nv_bfloat16>({32, 8, 128}, 16, 1);
  run_invariance<__half>({28, 4, 64}, 1, 2);
  run_invariance<float>({8, 2, 64}, 16, 3);
}

}  // namespace
}  // namespace radix_attention
