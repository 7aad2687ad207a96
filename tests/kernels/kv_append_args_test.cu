// Argument checks of kv_append and copy_blocks (typed errors naming the argument, thrown before
// any CUDA call, so these run without a GPU), "nothing written" on a rejected call (GPU), and
// the host validators of slot mappings and copy lists.

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/ops/kv_append.cuh"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"

namespace radix_attention {
namespace {

using bf16 = __nv_bfloat16;
using fp8 = __nv_fp8_e4m3;
using test::DeviceBuffer;

/// A fake, 256-byte aligned device address: the checks compare pointers, never dereference.
template <class T>
T* fake(std::uintptr_t n) {
  return reinterpret_cast<T*>(n << 20);
}

template <class Exception = InvalidArgument, class F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one mentioning '" << needle << "'";
  } catch (const Exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

struct Args {
  KvAppendInput<bf16> input{fake<const bf16>(1), fake<const bf16>(2), 16};
  const std::int32_t* slots = fake<const std::int32_t>(3);
  PagedKvCacheMutView<bf16> cache{fake<bf16>(4), fake<bf16>(5), 8, 16, 2, 128};
  KvAppendOptions options{};
};

using Mutation = std::function<void(Args&)>;

struct BadCase {
  const char* needle;
  Mutation mutate;
};

std::vector<BadCase> bad_cases() {
  return {
      {"cache.num_blocks = 0", [](Args& a) { a.cache.num_blocks = 0; }},
      {"cache.block_size = 0", [](Args& a) { a.cache.block_size = 0; }},
      {"cache.num_kv_heads = -1", [](Args& a) { a.cache.num_kv_heads = -1; }},
      {"cache.head_dim = 0", [](Args& a) { a.cache.head_dim = 0; }},
      {"cache.num_blocks * cache.block_size",
       [](Args& a) { a.cache.num_blocks = 1 << 20, a.cache.block_size = 1 << 12; }},
      {"cache.num_kv_heads * cache.head_dim",
       [](Args& a) { a.cache.num_kv_heads = 1 << 16, a.cache.head_dim = 1 << 14; }},
      {"cache.block_stride = -1", [](Args& a) { a.cache.block_stride = -1; }},
      {"cache.token_stride = -2", [](Args& a) { a.cache.token_stride = -2; }},
      {"cache.head_stride = -3", [](Args& a) { a.cache.head_stride = -3; }},
      {"share an address", [](Args& a) { a.cache.head_stride = 64; }},  // heads overlap
      {"share an address", [](Args& a) { a.cache.block_stride = 128; }},
      {"cache.k = nullptr", [](Args& a) { a.cache.k = nullptr; }},
      {"cache.v = nullptr", [](Args& a) { a.cache.v = nullptr; }},
      {"cache.v",
       [](Args& a) { a.cache.v = reinterpret_cast<bf16*>(std::uintptr_t(1) << 20 | 1); }},
      {"input.num_tokens = -1", [](Args& a) { a.input.num_tokens = -1; }},
      {"input.num_tokens = 1073741825", [](Args& a) { a.input.num_tokens = (1 << 30) + 1; }},
      {"input.token_stride = -1", [](Args& a) { a.input.token_stride = -1; }},
      {"input.head_stride = -1", [](Args& a) { a.input.head_stride = -1; }},
      {"input.k = nullptr", [](Args& a) { a.input.k = nullptr; }},
      {"input.v = nullptr", [](Args& a) { a.input.v = nullptr; }},
      {"input.k",
       [](Args& a) { a.input.k = reinterpret_cast<const bf16*>(std::uintptr_t(1) << 20 | 1); }},
      {"options.scales.k_scale", [](Args& a) { a.options.scales.k_scale = fake<const float>(6); }},
      {"options.scales.v_scale", [](Args& a) { a.options.scales.v_scale = fake<const float>(6); }},
      {"options.nonfinite_count", [](Args& a) { a.options.nonfinite_count = fake<int>(6); }},
      {"slot_mapping = nullptr", [](Args& a) { a.slots = nullptr; }},
      {"slot_mapping",
       [](Args& a) {
         a.slots = reinterpret_cast<const std::int32_t*>(std::uintptr_t(1) << 20 | 2);
       }},
  };
}

TEST(KvAppendArgs, RejectedWithTheArgumentNamedBeforeAnyCudaCall) {
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.needle);
    Args a;
    c.mutate(a);
    expect_error([&] { kv_append(a.input, a.slots, a.cache, nullptr, a.options); }, c.needle);
  }
}

TEST(KvAppendArgs, Fp8OptionsChecked) {
  KvAppendInput<float> input{fake<const float>(1), fake<const float>(2), 4};
  PagedKvCacheMutView<fp8> cache{fake<fp8>(4), fake<fp8>(5), 8, 16, 2, 128};
  KvAppendOptions options;
  options.scales.k_scale = reinterpret_cast<const float*>(std::uintptr_t(1) << 20 | 2);
  expect_error([&] { kv_append(input, fake<const std::int32_t>(3), cache, nullptr, options); },
               "options.scales.k_scale");
  options = {};
  options.scales.mode = static_cast<KvScaleMode>(7);
  expect_error([&] { kv_append(input, fake<const std::int32_t>(3), cache, nullptr, options); },
               "options.scales.mode = 7");
  options = {};
  options.nonfinite_count = reinterpret_cast<int*>(std::uintptr_t(1) << 20 | 1);
  expect_error([&] { kv_append(input, fake<const std::int32_t>(3), cache, nullptr, options); },
               "options.nonfinite_count");
}

TEST(KvAppendArgs, ZeroTokensLaunchNothing) {
  // Returns after the checks, before any CUDA call: works without a device, slot_mapping unused.
  Args a;
  a.input.num_tokens = 0;
  a.input.k = a.input.v = nullptr;
  EXPECT_NO_THROW(kv_append(a.input, nullptr, a.cache, nullptr));
  EXPECT_NO_THROW(copy_blocks(a.cache, static_cast<const std::int32_t*>(nullptr), 0, nullptr));
}

TEST(CopyBlocksArgs, RejectedWithTheArgumentNamed) {
  Args a;
  expect_error([&] { copy_blocks(a.cache, fake<const std::int32_t>(3), -1, nullptr); },
               "num_pairs = -1");
  expect_error([&] { copy_blocks(a.cache, static_cast<const std::int32_t*>(nullptr), 2, nullptr); },
               "pairs = nullptr");
  expect_error([&] { copy_blocks(a.cache, static_cast<const BlockCopy*>(nullptr), 1, nullptr); },
               "copies = nullptr");
  a.cache.token_stride = 100;  // tokens overlap heads
  expect_error([&] { copy_blocks(a.cache, fake<const std::int32_t>(3), 1, nullptr); },
               "share an address");
}

TEST(KvAppendArgs, RejectedCallWritesNothing) {
  RADIX_ATTENTION_REQUIRE_GPU();
  std::mt19937_64 rng(8);
  test::Pool<bf16> pool(test::Layout::kNhd, 4, 16, 2, 128, rng);
  DeviceBuffer<bf16> in(test::random_vector<bf16>(2 * 4 * 2 * 128, rng));
  DeviceBuffer<std::int32_t> slots(std::vector<std::int32_t>{0, 5, 63, -1});
  DeviceBuffer<float> scale(std::vector<float>{0.5f});
  KvAppendInput<bf16> input{in.data(), in.data() + 4 * 2 * 128, 4};
  PagedKvCacheMutView<bf16> cache = pool.view();
  KvAppendOptions options;
  options.scales.k_scale = scale.data();  // a bf16 cache takes no scales
  EXPECT_THROW(kv_append(input, slots.data(), cache, nullptr, options), InvalidArgument);
  cache.head_stride = 64;  // overlapping heads
  EXPECT_THROW(kv_append(input, slots.data(), cache, nullptr), InvalidArgument);
  EXPECT_THROW(copy_blocks(cache, slots.data(), 2, nullptr), InvalidArgument);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  test::expect_pool_matches(pool);
}

TEST(ValidateSlotMapping, NamesTheBadEntry) {
  const std::vector<std::int32_t> good = {3, -1, 0, 63, -100};
  EXPECT_NO_THROW(validate_slot_mapping(good.data(), 5, 64));
  EXPECT_NO_THROW(validate_slot_mapping(nullptr, 0, 64));
  const std::vector<std::int32_t> past = {3, -1, 64};
  expect_error([&] { validate_slot_mapping(past.data(), 3, 64); }, "slot_mapping[2] = 64");
  const std::vector<std::int32_t> twice = {3, 9, -1, 9};
  expect_error([&] { validate_slot_mapping(twice.data(), 4, 64); },
               "slot_mapping[3] = 9: slot already used by slot_mapping[1]");
  expect_error([&] { validate_slot_mapping(nullptr, 2, 64); }, "slot_mapping = nullptr");
}

TEST(ValidateBlockCopies, NamesTheBadEntry) {
  const std::vector<std::int32_t> good = {0, 3, 0, 4, 1, 5};
  EXPECT_NO_THROW(validate_block_copies(good.data(), 3, 8));
  const std::vector<std::int32_t> out = {0, 3, 1, 8};
  expect_error([&] { validate_block_copies(out.data(), 2, 8); }, "pairs[1].dst = 8");
  const std::vector<std::int32_t> neg = {-1, 3};
  expect_error([&] { validate_block_copies(neg.data(), 1, 8); }, "pairs[0].src = -1");
  const std::vector<std::int32_t> dup = {0, 3, 1, 3};
  expect_error([&] { validate_block_copies(dup.data(), 2, 8); },
               "pairs[1].dst = 3: also the destination of pairs[0]");
  const std::vector<std::int32_t> chain = {0, 3, 3, 4};
  expect_error([&] { validate_block_copies(chain.data(), 2, 8); },
               "pairs[0].dst = 3: is also the source of another copy");
  const std::vector<BlockCopy> copies = {{2, 5, 17}};
  expect_error([&] { validate_block_copies(copies.data(), 1, 8, 16); },
               "copies[0].num_tokens = 17");
  EXPECT_NO_THROW(validate_block_copies(copies.data(), 1, 8, 17));
}

}  // namespace
}  // namespace radix_attention
