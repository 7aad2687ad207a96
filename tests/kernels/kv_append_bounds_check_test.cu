// The compile-time bounds-check option for kv_append: with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK
// defined, a slot past the pool makes the kernel trap (surfacing as CudaError) instead of
// writing arbitrary memory; the trap runs in a child process (support/expect_trap.hpp).

#define RADIX_ATTENTION_KERNEL_BOUNDS_CHECK 1

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/kv_append.cuh"
#include "support/device_buffer.hpp"
#include "support/expect_trap.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

TEST(KvAppendBoundsCheck, ValidSlotsRunAndSlotPastThePoolTraps) {
  RADIX_ATTENTION_REQUIRE_GPU();
  using T = __nv_bfloat16;
  const int num_blocks = 4, bs = 16, heads = 2, D = 64;
  std::mt19937_64 rng(5);
  test::DeviceBuffer<T> k(std::size_t(num_blocks) * bs * heads * D),
      v(std::size_t(num_blocks) * bs * heads * D);
  test::DeviceBuffer<T> rows(test::random_vector<T>(std::size_t(2) * 3 * heads * D, rng));
  test::DeviceBuffer<std::int32_t> good(std::vector<std::int32_t>{63, -1, 0});
  test::DeviceBuffer<std::int32_t> bad(std::vector<std::int32_t>{63, -1, 64});  // 64 = past
  PagedKvCacheMutView<T> cache{k.data(), v.data(), num_blocks, bs, heads, D};
  KvAppendInput<T> input{rows.data(), rows.data() + 3 * heads * D, 3};
  kv_append(input, good.data(), cache, nullptr);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  test::expect_trap([&] { kv_append(input, bad.data(), cache, nullptr); });
}

}  // namespace
}  // namespace radix_attention
