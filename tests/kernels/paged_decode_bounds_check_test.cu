// The compile-time bounds-check option: with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK defined, an
// out-of-range block id makes paged_decode trap (surfacing as CudaError) instead of reading
// arbitrary memory, on the tensor-core mainloop (16-bit) and the CUDA-core one (float). Each
// trap runs in a child process (support/expect_trap.hpp).

#define RADIX_ATTENTION_KERNEL_BOUNDS_CHECK 1

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "support/device_buffer.hpp"
#include "support/expect_trap.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

/// Two sequences (40 and 16 tokens) over a 4-block cache: valid tables decode, a table naming
/// block 4 traps.
template <class T>
void expect_trap_only_on_bad_block_id() {
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
  test::expect_trap([&] {
    paged_decode(q.data(), heads, cache, tables, out.data(), nullptr, nullptr, 0, nullptr, options);
  });
}

TEST(PagedDecodeBoundsCheck, ValidTablesRunAndBadBlockIdTraps) {
  RADIX_ATTENTION_REQUIRE_GPU();
  expect_trap_only_on_bad_block_id<__nv_bfloat16>();
}

TEST(PagedDecodeBoundsCheck, FloatKernelTrapsOnBadBlockId) {
  RADIX_ATTENTION_REQUIRE_GPU();
  expect_trap_only_on_bad_block_id<float>();
}

}  // namespace
}  // namespace radix_attention
