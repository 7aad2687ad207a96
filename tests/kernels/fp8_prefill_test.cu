// paged_prefill over an fp8 e4m3 cache against the float64 reference on the dequantised cache:
// half and bf16 queries, every head_dim, GQA groups, block sizes 1..128, causal and unmasked
// chunked prefill (new rows after cached prefixes), empty contexts, NHD / HND / combined fp8
// layouts, per-tensor and per-head scales, poisoned outputs; plus the fp8 option checks.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/ops/paged_prefill.cuh"
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
using test::prefill::Layout;
using test::prefill::Request;
using E = __nv_fp8_e4m3;

struct Case {
  DType dtype;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
  std::vector<Request> requests;
  bool causal = true;
  Layout layout = Layout::kNhd;
  KvScaleMode mode = KvScaleMode::kPerHead;
};

template <class T>
void run_case(const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << DTypeTraits<T>::name << " D=" << c.head_dim << " Hq=" << c.num_q_heads
               << " Hkv=" << c.num_kv_heads << " bs=" << c.block_size << " causal=" << c.causal
               << " layout=" << static_cast<int>(c.layout) << " mode=" << static_cast<int>(c.mode)
               << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int D = c.head_dim, Hq = c.num_q_heads, Hkv = c.num_kv_heads, bs = c.block_size;
  const int num_seqs = static_cast<int>(c.requests.size());
  const test::prefill::Tables t = test::prefill::make_tables(c.requests, bs, rng);
  const std::size_t slots = static_cast<std::size_t>(t.num_blocks) * bs;
  const test::Fp8Tensor k = test::random_fp8_tensor(slots, Hkv, D, c.mode, rng);
  const test::Fp8Tensor v = test::random_fp8_tensor(slots, Hkv, D, c.mode, rng);
  const std::size_t q_elems = static_cast<std::size_t>(t.total_q) * Hq * D;
  const std::vector<T> q = test::random_vector<T>(q_elems, rng, -3.f, 3.f);

  PagedKvCacheView<E> cache{nullptr, nullptr, t.num_blocks, bs, Hkv, D};
  std::size_t v_offset = 0;
  auto [k_dev, v_dev] = test::prefill::to_layout(k.codes, v.codes, c.layout, t.num_blocks, bs, Hkv,
                                                 D, cache, v_offset);
  DeviceBuffer<T> d_q(q), d_out(q_elems);
  DeviceBuffer<E> d_k(k_dev), d_v(v_dev.empty() ? std::vector<E>(16) : v_dev);
  DeviceBuffer<float> d_ks(k.scales), d_vs(v.scales);
  DeviceBuffer<std::int32_t> d_tables(t.table), d_lens(t.context_lens), d_indptr(t.qo_indptr);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(t.total_q) * Hq);
  d_out.poison();
  d_lse.poison();
  cache.k = d_k.data();
  cache.v = c.layout == Layout::kCombined ? d_k.data() + v_offset : d_v.data();
  const BlockTableView tables{d_tables.data(), d_lens.data(), num_seqs,
                              t.max_blocks,    t.row_stride,  -1};
  const PrefillBatchView batch{d_indptr.data(), t.total_q, t.max_q_len};
  PagedPrefillOptions options;
  options.causal = c.causal;
  options.kv_scales = {d_ks.data(), d_vs.data(), c.mode};
  paged_prefill(d_q.data(), Hq, batch, cache, tables, d_out.data(), d_lse.data(), nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out = d_out.download();
  const std::vector<float> lse = d_lse.download();

  std::vector<double> ref(q_elems), ref_lse(static_cast<std::size_t>(t.total_q) * Hq);
  reference::HostPagedCache<float> host{
      k.dequant.data(), v.dequant.data(), t.num_blocks, bs, Hkv, D};
  reference::paged_prefill(q.data(), host, t.table.data(), t.row_stride, t.context_lens.data(),
                           t.qo_indptr.data(), num_seqs, Hq, 1.0 / std::sqrt(double(D)), c.causal,
                           ref.data(), ref_lse.data());
  // Per row: the shared checker's "context" of a row is the number of keys it sees.
  const std::vector<std::int32_t> visible = test::prefill::visible_keys(c.requests, t, c.causal);
  test::expect_decode_matches(out, lse.data(), ref, ref_lse.data(), visible.data(),
                              {t.total_q, Hq, D}, 1e-2);
}

void run(const Case& c, std::uint64_t seed) {
  if (c.dtype == DType::kHalf) {
    run_case<__half>(c, seed);
  } else {
    run_case<__nv_bfloat16>(c, seed);
  }
}

class Fp8PrefillTest : public test::GpuTest {};

TEST_F(Fp8PrefillTest, EveryQueryTypeAndHeadDim) {
  std::uint64_t seed = 1;
  const std::vector<Request> reqs{{17, 0}, {1, 40}, {64, 101}, {65, 3}, {0, 10}, {131, 7}};
  for (DType dt : {DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) {
      for (bool causal : {true, false}) run({dt, D, 8, 2, 16, reqs, causal}, seed++);
    }
  }
}

TEST_F(Fp8PrefillTest, GqaGroups) {
  std::uint64_t seed = 100;
  for (int group : {1, 4, 7, 8}) {
    run({DType::kBf16, 128, 2 * group, 2, 16, {{33, 21}, {65, 0}, {5, 301}}}, seed++);
    run({DType::kHalf, 64, group, 1, 8, {{19, 11}, {3, 0}}, false}, seed++);
  }
}

TEST_F(Fp8PrefillTest, BlockSizesAndScaleModes) {
  std::uint64_t seed = 200;
  for (int bs : {1, 3, 16, 128}) {
    for (KvScaleMode mode : {KvScaleMode::kPerTensor, KvScaleMode::kPerHead}) {
      run({DType::kBf16, 128, 8, 2, bs, {{65, 201}, {17, 0}, {1, 129}}, true, Layout::kNhd, mode},
          seed++);
      run({DType::kHalf, 256, 4, 4, bs, {{33, 63}}, false, Layout::kNhd, mode}, seed++);
    }
  }
}

TEST_F(Fp8PrefillTest, ChunkedPrefillLengths) {
  std::uint64_t seed = 300;
  for (int q_len : {1, 17, 65, 513}) {
    for (int prefix : {0, 5, 1001}) {
      run({DType::kBf16, 128, 4, 1, 16, {{q_len, prefix}, {0, 7}, {3, 1}}, prefix % 2 == 0},
          seed++);
    }
  }
}

TEST_F(Fp8PrefillTest, EmptyContextsAndLayouts) {
  std::uint64_t seed = 400;
  run({DType::kBf16, 128, 4, 2, 16, {{0, 0}, {5, -5}, {0, 9}, {3, 0}}, false}, seed++);
  run({DType::kHalf, 64, 2, 1, 8, {{9, -4}, {0, 0}, {1, 0}}}, seed++);
  for (Layout layout : {Layout::kHnd, Layout::kCombined}) {
    run({DType::kBf16, 128, 8, 2, 16, {{40, 31}, {7, 0}}, true, layout}, seed++);
    run({DType::kHalf, 64, 4, 2, 3, {{9, 4}}, false, layout}, seed++);
  }
}

// ---- argument validation: runs without a GPU (every check precedes any CUDA call) ----------
TEST(Fp8PrefillValidation, RejectsBadScalesAndStrides) {
  using test::fake_ptr;
  using T = __half;
  const BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 2, 10, 10, -1};
  const PrefillBatchView batch{fake_ptr<std::int32_t>(), 8, 4};
  auto call = [&](const auto& cache, const PagedPrefillOptions& o) {
    paged_prefill(fake_ptr<T>(), 8, batch, cache, tables, fake_ptr<T>(), nullptr, nullptr, o);
  };
  PagedKvCacheView<E> fp8{fake_ptr<E>(), fake_ptr<E>(), 100, 16, 2, 128};
  PagedPrefillOptions o;
  o.kv_scales = {fake_ptr<float>(4097), nullptr, KvScaleMode::kPerTensor};
  EXPECT_THROW(call(fp8, o), InvalidArgument);
  o.kv_scales = {nullptr, nullptr, static_cast<KvScaleMode>(-1)};
  EXPECT_THROW(call(fp8, o), InvalidArgument);
  o.kv_scales = {};
  fp8.head_stride = 136;  // 136 bytes: not a 16-byte multiple for fp8
  try {
    call(fp8, o);
    ADD_FAILURE() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("cache strides"), std::string::npos) << e.what();
  }
  const PagedKvCacheView<T> half{fake_ptr<T>(), fake_ptr<T>(), 100, 16, 2, 128};
  o.kv_scales = {nullptr, fake_ptr<float>(), KvScaleMode::kPerTensor};
  EXPECT_THROW(call(half, o), InvalidArgument);  // scales on a 16-bit cache
}

}  // namespace
}  // namespace radix_attention
