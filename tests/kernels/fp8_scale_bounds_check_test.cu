// The fp8 readers under RADIX_ATTENTION_KERNEL_BOUNDS_CHECK: positive finite scales run, a zero
// (or negative, or non-finite) scale, which would turn the result into zeros or NaN, traps
// (surfacing as CudaError), in a child process (support/expect_trap.hpp).

#define RADIX_ATTENTION_KERNEL_BOUNDS_CHECK 1

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "support/device_buffer.hpp"
#include "support/expect_trap.hpp"
#include "support/fp8_kv.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

TEST(Fp8ScaleBoundsCheck, PositiveScalesRunAndZeroScaleTraps) {
  RADIX_ATTENTION_REQUIRE_GPU();
  using T = __nv_bfloat16;
  const int num_blocks = 4, bs = 16, heads = 2, D = 64;
  std::mt19937_64 rng(5);
  const std::size_t slots = std::size_t(num_blocks) * bs;
  const test::Fp8Tensor kt = test::random_fp8_tensor(slots, heads, D, KvScaleMode::kPerHead, rng);
  const test::Fp8Tensor vt = test::random_fp8_tensor(slots, heads, D, KvScaleMode::kPerHead, rng);
  test::DeviceBuffer<__nv_fp8_e4m3> k(kt.codes), v(vt.codes);
  test::DeviceBuffer<float> k_scale(kt.scales), v_scale(vt.scales);
  test::DeviceBuffer<float> bad_scale(std::vector<float>{0.5f, 0.f});  // head 1: zero
  test::DeviceBuffer<T> q(test::random_vector<T>(std::size_t(2) * heads * D, rng)),
      out(2 * heads * D);
  test::DeviceBuffer<std::int32_t> lens(std::vector<std::int32_t>{40, 16});
  test::DeviceBuffer<std::int32_t> table(std::vector<std::int32_t>{3, 1, 0, 2, -1, -1});
  const PagedKvCacheView<__nv_fp8_e4m3> cache{k.data(), v.data(), num_blocks, bs, heads, D};
  const BlockTableView tables{table.data(), lens.data(), 2, 3, 3, -1};
  PagedDecodeOptions options;
  options.num_splits = 1;
  options.kv_scales = {k_scale.data(), v_scale.data(), KvScaleMode::kPerHead};
  paged_decode(q.data(), heads, cache, tables, out.data(), nullptr, nullptr, 0, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

  options.kv_scales.v_scale = bad_scale.data();
  test::expect_trap([&] {
    paged_decode(q.data(), heads, cache, tables, out.data(), nullptr, nullptr, 0, nullptr, options);
  });
}

}  // namespace
}  // namespace radix_attention
