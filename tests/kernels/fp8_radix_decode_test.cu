// radix_decode over an fp8 e4m3 cache against the float64 reference on the dequantised cache:
// shared-prefix, nested and no-sharing plans (hand-built as in radix_decode_test), half and
// bf16 queries, every head_dim, GQA groups, block sizes 1..128, chunked segments, a context-0
// query, per-tensor and per-head scales, the fixed grid; plus the fp8 option checks (no GPU).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/fake_pointer.hpp"
#include "support/fp8_kv.hpp"
#include "support/gpu.hpp"
#include "support/radix_batch.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;
using test::Shape;
using E = __nv_fp8_e4m3;

struct Case {
  DType dtype = DType::kBf16;
  int head_dim = 128;
  int num_q_heads = 8;
  int num_kv_heads = 2;
  int block_size = 16;
  int max_chunk_tokens = 1 << 30;
  KvScaleMode mode = KvScaleMode::kPerHead;
  bool fixed_grid = false;
};

template <class T>
void run_case(const Shape& shape, const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << DTypeTraits<T>::name << " D=" << c.head_dim << " Hq=" << c.num_q_heads
               << " Hkv=" << c.num_kv_heads << " bs=" << c.block_size
               << " chunk=" << c.max_chunk_tokens << " mode=" << static_cast<int>(c.mode)
               << " fixed=" << c.fixed_grid << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const test::HostBatch b = test::build_batch(shape, c.block_size, c.max_chunk_tokens, rng);
  const int D = c.head_dim;
  const std::size_t slots = static_cast<std::size_t>(b.num_blocks) * c.block_size;
  const test::Fp8Tensor k = test::random_fp8_tensor(slots, c.num_kv_heads, D, c.mode, rng);
  const test::Fp8Tensor v = test::random_fp8_tensor(slots, c.num_kv_heads, D, c.mode, rng);
  const std::size_t q_elems = static_cast<std::size_t>(b.num_queries) * c.num_q_heads * D;
  const std::vector<T> q = test::random_vector<T>(q_elems, rng, -3.f, 3.f);

  DeviceBuffer<T> d_q(q), d_out(q_elems), d_paged(q_elems);
  DeviceBuffer<E> d_k(k.codes), d_v(v.codes);
  DeviceBuffer<float> d_ks(k.scales), d_vs(v.scales);
  DeviceBuffer<std::int32_t> d_tables(b.tables), d_lens(b.context_lens);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(b.num_queries) * c.num_q_heads);
  d_out.poison();
  d_lse.poison();
  d_paged.poison();
  PagedKvCacheView<E> cache{d_k.data(), d_v.data(), b.num_blocks, c.block_size, c.num_kv_heads, D};
  BlockTableView view{d_tables.data(), d_lens.data(), b.num_queries,
                      b.max_blocks,    b.row_stride,  -1};
  const KvScales scales{d_ks.data(), d_vs.data(), c.mode};

  DeviceRadixPlan plan;
  plan.upload(b.plan, b.context_lens, c.num_q_heads / c.num_kv_heads, nullptr);
  const std::size_t ws_bytes = radix_decode_workspace_bytes(plan, c.num_q_heads, D);
  DeviceBuffer<unsigned char> workspace(std::max<std::size_t>(ws_bytes, 16));
  workspace.poison();
  RadixDecodeOptions options;
  options.fixed_grid = c.fixed_grid;
  options.kv_scales = scales;
  radix_decode(d_q.data(), c.num_q_heads, cache, view, plan, d_out.data(), d_lse.data(),
               workspace.data(), ws_bytes, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = d_out.download();
  const std::vector<float> lse = d_lse.download();

  std::vector<double> ref(q_elems),
      ref_lse(static_cast<std::size_t>(b.num_queries) * c.num_q_heads);
  reference::HostPagedCache<float> host{k.dequant.data(), v.dequant.data(), b.num_blocks,
                                        c.block_size,     c.num_kv_heads,   D};
  reference::paged_decode(q.data(), host, b.tables.data(), b.row_stride, b.context_lens.data(),
                          b.num_queries, c.num_q_heads, 1.0 / std::sqrt(double(D)), ref.data(),
                          ref_lse.data());
  const double ref2 =
      test::expect_decode_matches(out, lse.data(), ref, ref_lse.data(), b.context_lens.data(),
                                  {b.num_queries, c.num_q_heads, D}, 1e-2, /*per_element=*/true);

  // The same batch through paged_decode's fp8 path: both read the same dequantised values.
  PagedDecodeOptions po;
  po.kv_scales = scales;
  const std::size_t pws = paged_decode_workspace_bytes(c.num_q_heads, cache, view, po);
  DeviceBuffer<unsigned char> pwork(std::max<std::size_t>(pws, 16));
  paged_decode(d_q.data(), c.num_q_heads, cache, view, d_paged.data(), nullptr, pwork.data(), pws,
               nullptr, po);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> paged = d_paged.download();
  double diff2 = 0.0;
  for (std::size_t i = 0; i < q_elems; ++i) {
    const double d = static_cast<float>(out[i]) - static_cast<float>(paged[i]);
    diff2 += d * d;
  }
  if (ref2 > 0) EXPECT_LT(std::sqrt(diff2 / ref2), 1e-2) << "radix_decode vs paged_decode";
}

void run(const Shape& shape, const Case& c, std::uint64_t seed) {
  if (c.dtype == DType::kHalf) {
    run_case<__half>(shape, c, seed);
  } else {
    run_case<__nv_bfloat16>(shape, c, seed);
  }
}

class Fp8RadixDecodeTest : public test::GpuTest {};

TEST_F(Fp8RadixDecodeTest, SharedPrefixEveryQueryTypeAndHeadDim) {
  std::uint64_t seed = 1;
  for (DType dt : {DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) {
      Case c;
      c.dtype = dt;
      c.head_dim = D;
      run(test::shared_prefix(9, 160, {1, 37, 71, 16}), c, seed++);
    }
  }
}

TEST_F(Fp8RadixDecodeTest, ManyRowsNestedAndChunked) {
  Case c;
  c.max_chunk_tokens = 300;
  run(test::shared_prefix(40, 1024, {5, 131}), c, 10);  // 160 rows: three row tiles
  c.max_chunk_tokens = 256;
  c.dtype = DType::kHalf;
  run(test::two_level(3, 5, 256, 128, 21), c, 11);
  for (int chunk : {1, 17, 100}) {
    c.max_chunk_tokens = chunk;
    run(test::shared_prefix(5, 400, {51, 1}), c, 12 + chunk);
  }
}

TEST_F(Fp8RadixDecodeTest, GqaGroupsAndScaleModes) {
  std::uint64_t seed = 50;
  for (int group : {1, 4, 7, 8}) {
    for (KvScaleMode mode : {KvScaleMode::kPerTensor, KvScaleMode::kPerHead}) {
      Case c;
      c.num_q_heads = 2 * group;
      c.num_kv_heads = 2;
      c.max_chunk_tokens = 200;
      c.mode = mode;
      run(test::shared_prefix(6, 192, {1, 77}), c, seed++);
    }
  }
}

TEST_F(Fp8RadixDecodeTest, BlockSizes) {
  std::uint64_t seed = 70;
  for (int bs : {1, 3, 16, 128}) {
    Case c;
    c.block_size = bs;
    c.max_chunk_tokens = 384;
    c.dtype = bs % 2 == 0 ? DType::kBf16 : DType::kHalf;
    run(test::shared_prefix(7, 3 * 128, {1, 101, 129}), c, seed++);
  }
}

TEST_F(Fp8RadixDecodeTest, ContextZeroNoSharingFixedGrid) {
  Case c;
  Shape s = test::shared_prefix(4, 64, {11});
  s.queries.push_back({});  // a query with context 0: no partials
  run(s, c, 80);
  c.max_chunk_tokens = 512;
  run(test::no_sharing({1, 37, 701, 2049, 65}), c, 81);
  c.fixed_grid = true;
  c.max_chunk_tokens = 64;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  run(test::two_level(4, 8, 512, 256, 31), c, 82);
}

// ---- argument validation: runs without a GPU (every check precedes any CUDA call) ----------
TEST(Fp8RadixDecodeValidation, RejectsBadScales) {
  using test::fake_ptr;
  using T = __nv_bfloat16;
  const DeviceRadixPlan plan;  // never uploaded: only reached once the arguments pass
  BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 4, 10, 10, -1};
  auto call = [&](const auto& cache, const RadixDecodeOptions& o) {
    radix_decode(fake_ptr<T>(), 8, cache, tables, plan, fake_ptr<T>(), nullptr, nullptr, 0, nullptr,
                 o);
  };
  const PagedKvCacheView<E> fp8{fake_ptr<E>(), fake_ptr<E>(), 100, 16, 2, 128};
  RadixDecodeOptions o;
  o.kv_scales = {fake_ptr<float>(4098), nullptr, KvScaleMode::kPerHead};
  EXPECT_THROW(call(fp8, o), InvalidArgument);
  o.kv_scales = {nullptr, nullptr, static_cast<KvScaleMode>(2)};
  EXPECT_THROW(call(fp8, o), InvalidArgument);
  o.kv_scales = {fake_ptr<float>(), fake_ptr<float>(), KvScaleMode::kPerTensor};
  EXPECT_THROW(call(fp8, o), StateError);  // valid arguments: the plan check comes next
  const PagedKvCacheView<T> bf16{fake_ptr<T>(), fake_ptr<T>(), 100, 16, 2, 128};
  EXPECT_THROW(call(bf16, o), InvalidArgument);  // scales on a 16-bit cache
}

}  // namespace
}  // namespace radix_attention
