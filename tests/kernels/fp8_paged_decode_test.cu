// paged_decode over an fp8 e4m3 cache against the float64 reference on the dequantised cache:
// half and bf16 queries, every head_dim, GQA groups, block sizes 1..128, context lengths 0, 1
// and odd, per-tensor / per-head / absent scales, forced and automatic split-KV, every e4m3
// code read back exactly; plus the argument checks of the fp8 options (no GPU needed).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/fake_pointer.hpp"
#include "support/fp8_kv.hpp"
#include "support/gpu.hpp"
#include "support/prefill_batch.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;

enum class Scales { kPerTensor, kPerHead, kNone };

struct Case {
  DType dtype;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
  std::vector<int> context_lens;
  Scales scales = Scales::kPerHead;
  int num_splits = 0;  // 0: automatic
};

template <class T>
void run_case(const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << (c.dtype == DType::kHalf ? "half" : "bf16") << " D=" << c.head_dim
               << " Hq=" << c.num_q_heads << " Hkv=" << c.num_kv_heads << " bs=" << c.block_size
               << " scales=" << static_cast<int>(c.scales) << " splits=" << c.num_splits
               << " seqs=" << c.context_lens.size());
  std::mt19937_64 rng(seed);
  const int num_seqs = static_cast<int>(c.context_lens.size());
  const int D = c.head_dim;
  std::vector<test::prefill::Request> contexts;  // tables only: no new rows
  for (int len : c.context_lens) contexts.push_back({0, len});
  const test::prefill::Tables t = test::prefill::make_tables(contexts, c.block_size, rng);
  const std::size_t slots = static_cast<std::size_t>(t.num_blocks) * c.block_size;
  const KvScaleMode mode =
      c.scales == Scales::kPerTensor ? KvScaleMode::kPerTensor : KvScaleMode::kPerHead;
  test::Fp8Tensor k = test::random_fp8_tensor(slots, c.num_kv_heads, D, mode, rng);
  test::Fp8Tensor v = test::random_fp8_tensor(slots, c.num_kv_heads, D, mode, rng);
  if (c.scales == Scales::kNone) {  // scale 1: the codes are the values
    for (test::Fp8Tensor* x : {&k, &v}) {
      for (std::size_t i = 0; i < x->codes.size(); ++i) {
        x->dequant[i] = e4m3_to_float(x->codes[i].__x);
      }
    }
  }
  const std::size_t q_elems = static_cast<std::size_t>(num_seqs) * c.num_q_heads * D;
  const std::vector<T> q = test::random_vector<T>(q_elems, rng, -3.f, 3.f);

  DeviceBuffer<T> d_q(q), d_out(q_elems);
  DeviceBuffer<__nv_fp8_e4m3> d_k(k.codes), d_v(v.codes);
  DeviceBuffer<float> d_ks(k.scales), d_vs(v.scales);
  DeviceBuffer<std::int32_t> d_tables(t.table), d_lens(c.context_lens);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(num_seqs) * c.num_q_heads);
  d_out.poison();
  d_lse.poison();

  PagedKvCacheView<__nv_fp8_e4m3> cache{d_k.data(),   d_v.data(),     t.num_blocks,
                                        c.block_size, c.num_kv_heads, D};
  BlockTableView view{d_tables.data(), d_lens.data(), num_seqs, t.max_blocks, t.row_stride, -1};
  PagedDecodeOptions options;
  options.num_splits = c.num_splits;
  if (c.scales != Scales::kNone) options.kv_scales = {d_ks.data(), d_vs.data(), mode};
  const std::size_t ws_bytes = paged_decode_workspace_bytes(c.num_q_heads, cache, view, options);
  DeviceBuffer<unsigned char> workspace(ws_bytes);
  workspace.poison();
  paged_decode(d_q.data(), c.num_q_heads, cache, view, d_out.data(), d_lse.data(), workspace.data(),
               ws_bytes, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = d_out.download();
  const std::vector<float> lse = d_lse.download();

  std::vector<double> ref(q_elems), ref_lse(static_cast<std::size_t>(num_seqs) * c.num_q_heads);
  reference::HostPagedCache<float> host{k.dequant.data(), v.dequant.data(), t.num_blocks,
                                        c.block_size,     c.num_kv_heads,   D};
  reference::paged_decode(q.data(), host, t.table.data(), t.row_stride, c.context_lens.data(),
                          num_seqs, c.num_q_heads, 1.0 / std::sqrt(double(D)), ref.data(),
                          ref_lse.data());
  test::expect_decode_matches(out, lse.data(), ref, ref_lse.data(), c.context_lens.data(),
                              {num_seqs, c.num_q_heads, D}, 1e-2);
}

void run(const Case& c, std::uint64_t seed) {
  if (c.dtype == DType::kHalf) {
    run_case<__half>(c, seed);
  } else {
    run_case<__nv_bfloat16>(c, seed);
  }
}

std::vector<int> random_lengths(int n, int lo, int hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<int> out(n);
  for (int& x : out) x = dist(rng) | 1;  // odd lengths: the last tile is partial
  return out;
}

class Fp8PagedDecodeTest : public test::GpuTest {};

TEST_F(Fp8PagedDecodeTest, EveryQueryTypeAndHeadDim) {
  std::uint64_t seed = 1;
  for (DType dt : {DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) run({dt, D, 8, 2, 16, {1, 37, 701, 0, 65}}, seed++);
  }
}

TEST_F(Fp8PagedDecodeTest, GqaGroups) {
  std::uint64_t seed = 100;
  for (int group : {1, 4, 7, 8}) {
    run({DType::kBf16, 128, 2 * group, 2, 16, random_lengths(3, 1, 400, seed)}, seed++);
    run({DType::kHalf, 64, group, 1, 8, random_lengths(2, 1, 300, seed)}, seed++);
  }
  run({DType::kBf16, 256, 28, 4, 16, {333, 4}}, seed++);  // group 7 at head_dim 256
}

TEST_F(Fp8PagedDecodeTest, BlockSizes) {
  std::uint64_t seed = 200;
  for (int bs : {1, 3, 16, 128}) {
    run({DType::kBf16, 128, 8, 2, bs, {0, 1, 129, 777}}, seed++);
    run({DType::kHalf, 256, 4, 1, bs, random_lengths(2, 1, 500, seed)}, seed++);
  }
}

TEST_F(Fp8PagedDecodeTest, ScaleModes) {
  std::uint64_t seed = 300;
  for (Scales s : {Scales::kPerTensor, Scales::kPerHead, Scales::kNone}) {
    run({DType::kBf16, 128, 16, 4, 16, {65, 300, 1}, s}, seed++);
    run({DType::kHalf, 128, 8, 8, 3, {127, 2}, s}, seed++);
  }
}

TEST_F(Fp8PagedDecodeTest, ContextLengthEdges) {
  std::uint64_t seed = 400;
  run({DType::kBf16, 128, 4, 4, 16, {0, 0, 0}}, seed++);
  run({DType::kHalf, 128, 8, 2, 16, {1, 63, 64, 65, 127, 128, 129}}, seed++);
}

TEST_F(Fp8PagedDecodeTest, SplitKv) {
  std::uint64_t seed = 500;
  run({DType::kBf16, 128, 8, 2, 16, {5001, 3, 0, 901}, Scales::kPerHead, 7}, seed++);
  run({DType::kHalf, 64, 4, 4, 1, {2001, 99}, Scales::kPerTensor, 3}, seed++);
  run({DType::kBf16, 256, 16, 2, 8, {4001, 17}, Scales::kPerHead, 2}, seed++);
  run({DType::kBf16, 128, 4, 1, 16, {20001, 9001}}, seed++);  // automatic: underfilled GPU
}

// Every finite e4m3 code (subnormals, both zeros, 448) read back exactly: one-token contexts, so
// the softmax weight is 1 and the output is the dequantised V row itself (scale 1).
template <class T>
void every_code_exact() {
  constexpr int D = 128;
  std::vector<__nv_fp8_e4m3> k(2 * D), v(2 * D);
  std::vector<std::uint8_t> codes;
  for (int x = 0; x < 256; ++x) {
    if ((x & 0x7F) != 0x7F) codes.push_back(static_cast<std::uint8_t>(x));  // no NaN codes
  }
  while (codes.size() < v.size()) codes.push_back(0);
  for (std::size_t i = 0; i < v.size(); ++i) {
    v[i].__x = codes[i];
    k[i].__x = static_cast<std::uint8_t>(0x38 + i % 5);  // any finite keys
  }
  const std::vector<T> q = [] {
    std::mt19937_64 rng(7);
    return test::random_vector<T>(2 * D, rng);
  }();
  const std::vector<std::int32_t> tables = {1, 0}, lens = {1, 1};
  DeviceBuffer<T> d_q(q), d_out(q.size());
  DeviceBuffer<__nv_fp8_e4m3> d_k(k), d_v(v);
  DeviceBuffer<std::int32_t> d_tables(tables), d_lens(lens);
  d_out.poison();
  PagedKvCacheView<__nv_fp8_e4m3> cache{d_k.data(), d_v.data(), 2, 1, 1, D};
  BlockTableView view{d_tables.data(), d_lens.data(), 2, 1, 1, 1};
  PagedDecodeOptions options;
  options.num_splits = 1;
  paged_decode(d_q.data(), 1, cache, view, d_out.data(), nullptr, nullptr, 0, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = d_out.download();
  int bad = 0;
  for (int s = 0; s < 2; ++s) {
    for (int d = 0; d < D; ++d) {
      const float want = e4m3_to_float(v[tables[s] * D + d].__x);
      const float got = static_cast<float>(out[s * D + d]);
      if (!(got == want) && bad++ < 5) {
        ADD_FAILURE() << "code 0x" << std::hex << int(v[tables[s] * D + d].__x) << std::dec << ": "
                      << got << " vs " << want;
      }
    }
  }
}

TEST_F(Fp8PagedDecodeTest, EveryCodeExact) {
  every_code_exact<__nv_bfloat16>();
  every_code_exact<__half>();
}

// ---- argument validation: runs without a GPU (every check precedes any CUDA call) ----------
using test::fake_ptr;

struct ValidArgs {
  using T = __nv_bfloat16;
  using E = __nv_fp8_e4m3;
  const T* q = fake_ptr<T>();
  PagedKvCacheView<E> cache{fake_ptr<E>(), fake_ptr<E>(), 100, 16, 2, 128};
  BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 4, 10, 10, -1};
  T* out = fake_ptr<T>();
  PagedDecodeOptions options = [] {
    PagedDecodeOptions o{0.f, 1, 0};  // forced: no device query
    o.kv_scales = {fake_ptr<float>(), fake_ptr<float>(8192), KvScaleMode::kPerHead};
    return o;
  }();
  int num_q_heads = 8;
  void call() const {
    paged_decode(q, num_q_heads, cache, tables, out, nullptr, nullptr, 0, nullptr, options);
  }
};

std::string message_of(const ValidArgs& a) {
  try {
    a.call();
  } catch (const InvalidArgument& e) {
    return e.what();
  }
  return "no throw";
}

TEST(Fp8PagedDecodeValidation, RejectsBadScales) {
  {
    ValidArgs a;
    a.options.kv_scales.mode = static_cast<KvScaleMode>(5);
    EXPECT_NE(message_of(a).find("options.kv_scales.mode = 5"), std::string::npos) << message_of(a);
  }
  {
    ValidArgs a;
    a.options.kv_scales.k_scale = fake_ptr<float>(4098);
    EXPECT_NE(message_of(a).find("options.kv_scales.k_scale = "), std::string::npos)
        << message_of(a);
  }
  {
    ValidArgs a;
    a.options.kv_scales.v_scale = fake_ptr<float>(4097);
    EXPECT_NE(message_of(a).find("options.kv_scales.v_scale = "), std::string::npos)
        << message_of(a);
  }
  {
    ValidArgs a;
    a.cache.k = fake_ptr<__nv_fp8_e4m3>(4097);  // 16-byte loads
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.cache.head_dim = 96;
    EXPECT_NE(message_of(a).find("head_dim = 96"), std::string::npos) << message_of(a);
  }
  {  // scales on a 16-bit cache are a bug of the caller: it believes its cache quantised
    using T = __nv_bfloat16;
    PagedKvCacheView<T> cache{fake_ptr<T>(), fake_ptr<T>(), 100, 16, 2, 128};
    BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 4, 10, 10, -1};
    PagedDecodeOptions options{0.f, 1, 0};
    options.kv_scales.k_scale = fake_ptr<float>();
    EXPECT_THROW(paged_decode(fake_ptr<T>(), 8, cache, tables, fake_ptr<T>(), nullptr, nullptr, 0,
                              nullptr, options),
                 InvalidArgument);
    options.kv_scales = {nullptr, fake_ptr<float>(), KvScaleMode::kPerTensor};
    EXPECT_THROW(paged_decode_workspace_bytes(8, cache, tables, options), InvalidArgument);
  }
  {  // null scales (1.0) and an empty batch are valid; nothing is launched
    ValidArgs a;
    a.options.kv_scales = {};
    a.tables.num_seqs = 0;
    EXPECT_NO_THROW(a.call());
  }
}

}  // namespace
}  // namespace radix_attention
