// The compile-time bounds-check option: with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK defined, an
// out-of-range block id makes the kernel trap (surfacing as CudaError) instead of reading
// arbitrary memory. A trap leaves the CUDA context unusable, so this binary holds one test.

#define RADIX_ATTENTION_KERNEL_BOUNDS_CHECK 1

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

TEST(PagedDecodeBoundsCheck, ValidTablesRunAndBadBlockIdTraps) {
  RADIX_ATTENTION_REQUIRE_GPU();
  using T = __nv_bfloat16;
  const int num_blocks = 4, bs = 16, heads = 2, D = 64;
  std::mt19937_64 rng(5);
  test::DeviceBuffer<T> k(test::random_vector<T>(std::size_t(num_blocks) * bs * heads * D, rng));
  test::DeviceBuffer<T> v(test::random_vector<T>(std::size_t(num_blocks) * bs * heads * D, rng));
  test::DeviceBuffer<T> q(test::random_vector<T>(std::size_t(2) * heads * D, rng)),
      out(2 * heads * D);
  test::DeviceBuffer<std::int32_t> lens(std::vector<std::int32_t>{40, 16});
  test::DeviceBuffer<std::int32_t> good(std::vector<std::int32_t>{3, 1, 0, 2, -1, -1});
  test::DeviceBuffer<std::int32_t> bad(
      std::vector<std::int32_t>{3, 1, 0, 4, -1, -1});  // 4: out of range
  PagedKvCacheView<T> cache{k.data(), v.data(), num_blocks, bs, heads, D};
  BlockTableView tables{good.data(), lens.data(), 2, 3, 3, -1};
  PagedDecodeOptions options;
  options.num_splits = 1;
  paged_decode(q.data(), heads, cache, tables, out.data(), nullptr, nullptr, 0, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

  tables.block_tables = bad.data();
  EXPECT_THROW(
      {
        paged_decode(q.data(), heads, cache, tables, out.data(), nullptr, nullptr, 0, nullptr,
                     options);
        RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
      },
      CudaError);
}

}  // namespace
}  // namespace radix_attention
