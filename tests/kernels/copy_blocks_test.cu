// copy_blocks against a byte-exact host model of the whole pool: every cache element type
// (float, half, bf16, fp8 e4m3), NHD / HND / combined / padded layouts, block sizes 1..128,
// whole-block pairs and BlockCopy lists with partial token counts; and the copy list of a real
// SequenceManager::fork, uploaded as is, after kv_append wrote the parent's tokens.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/ops/kv_append.cuh"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::Layout;
using test::Pool;

/// Applies one copy to the model: offsets [0, num_tokens) of src into dst, K and V.
template <class T>
void model_copy(Pool<T>& pool, const BlockCopy& c) {
  for (int is_v = 0; is_v < 2; ++is_v) {
    for (int o = 0; o < c.num_tokens; ++o) {
      for (int h = 0; h < pool.heads; ++h) {
        for (int e = 0; e < pool.D; ++e) {
          pool.at(is_v, c.dst, o, h, e) = pool.at(is_v, c.src, o, h, e);
        }
      }
    }
  }
}

/// `n` copies between distinct blocks: sources and destinations disjoint, destinations unique.
std::vector<BlockCopy> random_copies(int n, int num_blocks, int bs, bool partial,
                                     std::mt19937_64& rng) {
  std::vector<std::int32_t> ids(num_blocks);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  std::vector<BlockCopy> copies;
  for (int i = 0; i < n; ++i) {
    const int tokens = partial ? static_cast<int>(rng() % (bs + 1)) : bs;
    copies.push_back({ids[i], ids[n + i], tokens});
  }
  return copies;
}

template <class T>
void run_copies(Layout layout, int heads, int D, int bs, int num_blocks, int n, bool as_block_copy,
                std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << DTypeTraits<T>::name << " " << test::name_of(layout) << " H=" << heads
               << " D=" << D << " bs=" << bs << " copies=" << n << " block_copy=" << as_block_copy);
  std::mt19937_64 rng(seed);
  Pool<T> pool(layout, num_blocks, bs, heads, D, rng);
  const std::vector<BlockCopy> copies = random_copies(n, num_blocks, bs, as_block_copy, rng);
  if (as_block_copy) {
    validate_block_copies(copies.data(), n, num_blocks, bs);
    DeviceBuffer<BlockCopy> d(copies);
    copy_blocks(pool.view(), d.data(), n, nullptr);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  } else {
    std::vector<std::int32_t> pairs;
    for (const BlockCopy& c : copies) pairs.push_back(c.src), pairs.push_back(c.dst);
    validate_block_copies(pairs.data(), n, num_blocks);
    DeviceBuffer<std::int32_t> d(pairs);
    copy_blocks(pool.view(), d.data(), n, nullptr);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  }
  for (const BlockCopy& c : copies) model_copy(pool, c);
  test::expect_pool_matches(pool);
}

class CopyBlocksGpu : public test::GpuTest {};

TEST_F(CopyBlocksGpu, EveryTypeLayoutAndBlockSize) {
  const Layout layouts[] = {Layout::kNhd, Layout::kHnd, Layout::kCombined, Layout::kPaddedNhd,
                            Layout::kOddPaddedNhd};
  std::uint64_t seed = 100;
  for (Layout layout : layouts) {
    for (int bs : {1, 3, 16, 128}) {
      for (bool as_block_copy : {false, true}) {
        const int heads = 1 + int(seed % 3), D = seed % 2 ? 128 : 64;
        const int blocks = std::max(8, 256 / bs), n = std::min(blocks / 2, 5);
        run_copies<float>(layout, heads, D, bs, blocks, n, as_block_copy, seed++);
        run_copies<__half>(layout, heads, D, bs, blocks, n, as_block_copy, seed++);
        run_copies<__nv_bfloat16>(layout, heads, D, bs, blocks, n, as_block_copy, seed++);
        run_copies<__nv_fp8_e4m3>(layout, heads, D, bs, blocks, n, as_block_copy, seed++);
      }
    }
  }
}

TEST_F(CopyBlocksGpu, ManyCopiesAndOddHeadDim) {
  // 512 copies of 16 x 8 x 128: the 4-tokens-per-thread instance; D = 72 with fp8 (a 16-byte
  // packet does not divide it): the element path.
  run_copies<__nv_bfloat16>(Layout::kNhd, 8, 128, 16, 1100, 512, false, 7);
  run_copies<__nv_fp8_e4m3>(Layout::kNhd, 2, 72, 16, 40, 10, true, 8);
}

TEST_F(CopyBlocksGpu, ExecutesTheForkCopyListOfSequenceManager) {
  using T = __nv_bfloat16;
  const int num_blocks = 12, bs = 16, heads = 2, D = 64;
  std::mt19937_64 rng(9);
  Pool<T> pool(Layout::kCombined, num_blocks, bs, heads, D, rng);
  BlockAllocator allocator(num_blocks);
  SequenceManager manager(allocator, bs);
  const SequenceId parent = manager.create(37);  // 2 full blocks + 5 tokens of a third

  // Write the parent's pending tokens through its slot mapping.
  const std::vector<std::int32_t> slots = manager.take_slot_mapping({parent});
  ASSERT_EQ(slots.size(), 37u);
  const std::vector<T> rows = test::random_vector<T>(2 * slots.size() * heads * D, rng);
  DeviceBuffer<T> d_rows(rows);
  DeviceBuffer<std::int32_t> d_slots(slots);
  const int n = static_cast<int>(slots.size());
  kv_append(KvAppendInput<T>{d_rows.data(), d_rows.data() + n * heads * D, n}, d_slots.data(),
            pool.view(), nullptr);

  const ForkResult fork = manager.fork(parent);
  ASSERT_EQ(fork.copies.size(), 1u);
  validate_block_copies(fork.copies.data(), 1, num_blocks, bs);
  DeviceBuffer<BlockCopy> d_copies(fork.copies);  // the vector uploaded as is
  copy_blocks(pool.view(), d_copies.data(), 1, nullptr);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

  for (int t = 0; t < n; ++t) {
    for (int is_v = 0; is_v < 2; ++is_v) {
      for (int h = 0; h < heads; ++h) {
        for (int e = 0; e < D; ++e) {
          pool.at(is_v, slots[t] / bs, slots[t] % bs, h, e) =
              rows[(is_v * n + t) * std::int64_t(heads) * D + h * D + e];
        }
      }
    }
  }
  model_copy(pool, fork.copies[0]);
  test::expect_pool_matches(pool);

  // The child's context reads the parent's tokens through its own block list.
  const std::vector<BlockId>& child = manager.blocks(fork.child);
  const std::vector<BlockId>& mother = manager.blocks(parent);
  ASSERT_EQ(child.size(), mother.size());
  EXPECT_NE(child.back(), mother.back());
  for (int t = 0; t < n; ++t) {
    EXPECT_EQ(0, std::memcmp(&pool.at(false, child[t / bs], t % bs, 1, 3),
                             &pool.at(false, mother[t / bs], t % bs, 1, 3), sizeof(T)));
  }
}

}  // namespace
}  // namespace radix_attention
