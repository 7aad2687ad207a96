// The compile-time bounds-check option on radix_decode's three mainloops (the wgmma TMA kernel,
// the mma.sync kernel, the CUDA-core kernel for float): with RADIX_ATTENTION_KERNEL_BOUNDS_CHECK
// defined, a block-table entry outside the cache makes the kernel trap (surfacing as CudaError)
// instead of reading arbitrary memory. Each trap runs in a child process
// (support/expect_trap.hpp).

#define RADIX_ATTENTION_KERNEL_BOUNDS_CHECK 1

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>

#include "radix_attention/ops/radix_decode.cuh"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/expect_trap.hpp"
#include "support/gpu.hpp"
#include "support/radix_batch.hpp"

namespace radix_attention {
namespace {

/// One radix_decode of a shared-prefix batch (8 q / 2 kv heads, head_dim 128, block size 16);
/// with `corrupt`, every query's first block-table entry names the block one past the cache.
template <class T>
void decode_once(RadixDecodeKernel kernel, bool corrupt) {
  constexpr int kHeads = 8, kKvHeads = 2, kHeadDim = 128, kBlockSize = 16;
  std::mt19937_64 rng(17);
  test::HostBatch b = test::build_batch(test::shared_prefix(4, 64, {10}), kBlockSize, 1 << 30, rng);
  if (corrupt) {
    for (int q = 0; q < b.num_queries; ++q) b.tables[q * b.row_stride] = b.num_blocks;
  }
  const auto [q, k, v] =
      test::random_qkv<T>(std::size_t(b.num_queries) * kHeads * kHeadDim,
                          std::size_t(b.num_blocks) * kBlockSize * kKvHeads * kHeadDim, rng);
  test::DeviceBuffer<T> d_q(q), d_k(k), d_v(v), d_out(q.size());
  test::DeviceBuffer<std::int32_t> d_tables(b.tables), d_lens(b.context_lens);
  test::DeviceBuffer<float> d_lse(std::size_t(b.num_queries) * kHeads);
  const PagedKvCacheView<T> cache{d_k.data(), d_v.data(), b.num_blocks,
                                  kBlockSize, kKvHeads,   kHeadDim};
  const BlockTableView tables{d_tables.data(), d_lens.data(), b.num_queries,
                              b.max_blocks,    b.row_stride,  -1};
  DeviceRadixPlan plan;
  plan.upload(b.plan, b.context_lens, kHeads / kKvHeads, nullptr);
  const std::size_t ws_bytes = radix_decode_workspace_bytes(plan, kHeads, kHeadDim);
  test::DeviceBuffer<unsigned char> workspace(std::max<std::size_t>(ws_bytes, 16));
  RadixDecodeOptions options;
  options.kernel = kernel;
  radix_decode(d_q.data(), kHeads, cache, tables, plan, d_out.data(), d_lse.data(),
               workspace.data(), ws_bytes, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
}

/// Valid tables decode; corrupted ones trap.
template <class T>
void expect_trap_only_on_bad_tables(RadixDecodeKernel kernel) {
  EXPECT_NO_THROW(decode_once<T>(kernel, /*corrupt=*/false));
  test::expect_trap([&] { decode_once<T>(kernel, /*corrupt=*/true); });
}

TEST(RadixDecodeBoundsCheck, TmaKernelTrapsOnBadBlockId) {
  RADIX_ATTENTION_REQUIRE_GPU();
  expect_trap_only_on_bad_tables<__nv_bfloat16>(RadixDecodeKernel::kTma);
}

TEST(RadixDecodeBoundsCheck, MmaKernelTrapsOnBadBlockId) {
  RADIX_ATTENTION_REQUIRE_GPU();
  expect_trap_only_on_bad_tables<__nv_bfloat16>(RadixDecodeKernel::kMma);
}

TEST(RadixDecodeBoundsCheck, FloatKernelTrapsOnBadBlockId) {
  RADIX_ATTENTION_REQUIRE_GPU();
  expect_trap_only_on_bad_tables<float>(RadixDecodeKernel::kMma);
}

}  // namespace
}  // namespace radix_attention
