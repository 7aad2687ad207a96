// paged_prefill against the float64 reference on fresh random inputs: every dtype / head_dim
// instance, GQA groups 1..8 and 7, block sizes 1..128, causal and non-causal masks, query
// lengths 0..1000 after cached prefixes of 0..16k tokens, random block placement, NHD / HND /
// combined K/V layouts and strided q / out rows; outputs poisoned and every element (and only
// those) checked; q_len 1 against paged_decode; argument validation (runs without a GPU).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/paged_prefill.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/expect_error.hpp"
#include "support/fake_pointer.hpp"
#include "support/gpu.hpp"
#include "support/prefill_batch.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;
using test::prefill::Layout;
using test::prefill::make_tables;
using test::prefill::Request;
using test::prefill::Tables;
using test::prefill::to_layout;

struct Case {
  DType dtype;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
  std::vector<Request> requests;
  bool causal = true;
  Layout layout = Layout::kNhd;
  int row_pad = 0;  // extra elements between rows of q and of out (strided rows)
  bool with_lse = true;
  float scale = 0.f;
  bool wgmma = true;  // false: the mma.sync kernels even where wgmma ones exist
  bool tma = true;    // false: the cp.async-fed wgmma kernel where the TMA one would run
};

const char* name_of(DType d) {
  return d == DType::kFloat ? "float" : d == DType::kHalf ? "half" : "bf16";
}

template <class T>
void run_case(const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << name_of(c.dtype) << " D=" << c.head_dim << " Hq=" << c.num_q_heads
               << " Hkv=" << c.num_kv_heads << " bs=" << c.block_size << " causal=" << c.causal
               << " layout=" << static_cast<int>(c.layout) << " pad=" << c.row_pad
               << " wgmma=" << c.wgmma << " tma=" << c.tma << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int D = c.head_dim, Hq = c.num_q_heads, Hkv = c.num_kv_heads, bs = c.block_size;
  const int num_seqs = static_cast<int>(c.requests.size());
  const Tables t = make_tables(c.requests, bs, rng);
  const std::int64_t row = std::int64_t{Hq} * D + c.row_pad;
  const std::size_t kv_elems = static_cast<std::size_t>(t.num_blocks) * bs * Hkv * D;
  const std::size_t q_elems = static_cast<std::size_t>(t.total_q) * row;
  auto [q, k, v] = test::random_qkv<T>(q_elems, kv_elems, rng);
  // The slots past each context in its last block hold NaN, as a reused or never-written block
  // may: a kernel must mask them, never multiply them by a zero probability.
  for (int s = 0; s < num_seqs; ++s) {
    const int len = t.context_lens[s];
    for (int tok = len; tok < (len + bs - 1) / bs * bs; ++tok) {
      const std::size_t slot =
          static_cast<std::size_t>(t.table[s * t.row_stride + tok / bs]) * bs + tok % bs;
      for (std::size_t e = slot * Hkv * D; e < (slot + 1) * Hkv * D; ++e) {
        k[e] = static_cast<T>(NAN);
        v[e] = static_cast<T>(NAN);
      }
    }
  }

  PagedKvCacheView<T> cache{nullptr, nullptr, t.num_blocks, bs, Hkv, D};
  std::size_t v_offset = 0;
  auto [k_dev_host, v_dev_host] =
      to_layout(k, v, c.layout, t.num_blocks, bs, Hkv, D, cache, v_offset);
  DeviceBuffer<T> d_q(q), d_k(k_dev_host), d_v(v_dev_host.empty() ? std::vector<T>(1) : v_dev_host);
  DeviceBuffer<T> d_out(q_elems);
  DeviceBuffer<std::int32_t> d_tables(t.table), d_lens(t.context_lens), d_indptr(t.qo_indptr);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(t.total_q) * Hq);
  d_out.poison();
  d_lse.poison();
  cache.k = d_k.data();
  cache.v = c.layout == Layout::kCombined ? d_k.data() + v_offset : d_v.data();
  const BlockTableView tables{d_tables.data(), d_lens.data(), num_seqs,
                              t.max_blocks,    t.row_stride,  -1};
  const PrefillBatchView batch{d_indptr.data(), t.total_q, t.max_q_len, row, row};
  PagedPrefillOptions options;
  options.causal = c.causal;
  options.scale = c.scale;
  options.allow_wgmma = c.wgmma;
  options.allow_tma = c.tma;
  paged_prefill(d_q.data(), Hq, batch, cache, tables, d_out.data(),
                c.with_lse ? d_lse.data() : nullptr, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> out_strided = d_out.download();
  const std::vector<float> lse = d_lse.download();

  // Pads between rows stay poisoned; the dense rows go to the shared comparison.
  std::vector<T> q_dense(static_cast<std::size_t>(t.total_q) * Hq * D), out(q_dense.size());
  int pad_written = 0;
  for (int r = 0; r < t.total_q; ++r) {
    for (std::int64_t e = 0; e < row; ++e) {
      const T o = out_strided[r * row + e];
      if (e < std::int64_t{Hq} * D) {
        q_dense[r * Hq * D + e] = q[r * row + e];
        out[r * Hq * D + e] = o;
      } else if (!std::isnan(static_cast<float>(o))) {
        ++pad_written;
      }
    }
  }
  EXPECT_EQ(pad_written, 0) << "elements between output rows were written";

  const double scale = c.scale != 0.f ? c.scale : 1.0 / std::sqrt(double(D));
  std::vector<double> ref(q_dense.size()), ref_lse(static_cast<std::size_t>(t.total_q) * Hq);
  const reference::HostPagedCache<T> host{k.data(), v.data(), t.num_blocks, bs, Hkv, D};
  reference::paged_prefill(q_dense.data(), host, t.table.data(), t.row_stride,
                           t.context_lens.data(), t.qo_indptr.data(), num_seqs, Hq, scale, c.causal,
                           ref.data(), ref_lse.data());
  // Per row: the shared checker's "context" of a row is the number of keys it sees.
  const std::vector<std::int32_t> visible = test::prefill::visible_keys(c.requests, t, c.causal);
  const double tol = c.dtype == DType::kFloat ? 1e-5 : 1e-2;
  test::expect_decode_matches(out, c.with_lse ? lse.data() : nullptr, ref, ref_lse.data(),
                              visible.data(), {t.total_q, Hq, D}, tol);
}

/// Runs the case on the default kernels and, for 16-bit inputs, on the cp.async-fed wgmma and
/// the mma.sync ones too (on a Hopper build the default is the TMA-fed wgmma kernel where the
/// block size allows; elsewhere the runs take the same path).
void run(const Case& c, std::uint64_t seed) {
  test::with_dtype(c.dtype, [&](auto tag) { run_case<typename decltype(tag)::type>(c, seed); });
  if (c.dtype != DType::kFloat && c.wgmma) {
    Case gathered = c;
    gathered.tma = false;
    test::with_dtype(c.dtype,
                     [&](auto tag) { run_case<typename decltype(tag)::type>(gathered, seed); });
    Case mma = c;
    mma.wgmma = false;
    test::with_dtype(c.dtype, [&](auto tag) { run_case<typename decltype(tag)::type>(mma, seed); });
  }
}

class PagedPrefillTest : public test::GpuTest {};

TEST_F(PagedPrefillTest, EveryDtypeAndHeadDim) {
  std::uint64_t seed = 1;
  const std::vector<Request> reqs{{17, 0}, {1, 40}, {64, 100}, {65, 3}, {0, 10}, {130, 7}};
  for (DType dt : {DType::kFloat, DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) {
      for (bool causal : {true, false}) run({dt, D, 8, 2, 16, reqs, causal}, seed++);
    }
  }
}

TEST_F(PagedPrefillTest, GqaGroups) {
  std::uint64_t seed = 100;
  for (int group : {1, 2, 3, 4, 5, 6, 7, 8, 16}) {
    run({DType::kBf16, 128, 2 * group, 2, 16, {{33, 20}, {65, 0}, {5, 300}}}, seed++);
    run({DType::kFloat, 64, group, 1, 8, {{19, 11}, {3, 0}}}, seed++);
  }
  run({DType::kHalf, 128, 28, 4, 16, {{100, 50}}, false}, seed++);  // group 7, no mask
}

TEST_F(PagedPrefillTest, BlockSizes) {
  std::uint64_t seed = 200;
  for (int bs : {1, 3, 16, 24, 64, 128}) {
    run({DType::kBf16, 128, 8, 2, bs, {{65, 200}, {17, 0}, {1, 129}}}, seed++);
    run({DType::kHalf, 64, 4, 4, bs, {{64, 63}}, false}, seed++);
    run({DType::kFloat, 128, 4, 2, bs, {{17, 33}}}, seed++);
  }
}

TEST_F(PagedPrefillTest, QueryAndPrefixLengths) {
  std::uint64_t seed = 300;
  for (int q_len : {1, 17, 64, 65, 1000}) {
    for (int prefix : {0, 5, 1000}) {
      run({DType::kBf16, 128, 4, 1, 16, {{q_len, prefix}, {0, 7}, {3, 1}}}, seed++);
    }
  }
  run({DType::kHalf, 256, 2, 1, 16, {{1000, 24}}}, seed++);
  run({DType::kFloat, 128, 2, 1, 16, {{1000, 0}}}, seed++);
}

TEST_F(PagedPrefillTest, LongPrefix16k) {
  run({DType::kBf16, 128, 8, 2, 16, {{65, 16384}, {17, 16000}}}, 400);
  run({DType::kHalf, 64, 4, 1, 1, {{33, 16384}}}, 401);
  run({DType::kFloat, 128, 2, 1, 16, {{5, 16389}}}, 402);
}

// More tiles than a persistent grid has CTAs (each CTA runs several, its stage ring and Q
// buffer cycling through many phases), and a ragged batch (one long request among many short
// ones) that gets one CTA per scheduled tile instead.
TEST_F(PagedPrefillTest, PersistentAndRaggedSchedules) {
  std::vector<Request> uniform(24, Request{200, 56});  // 7 x 24 x 2 = 336 tiles
  run({DType::kBf16, 128, 8, 2, 16, uniform}, 450);
  run({DType::kHalf, 64, 8, 2, 32, uniform, false}, 451);
  std::vector<Request> ragged{{700, 40}};
  for (int i = 0; i < 40; ++i) ragged.push_back({1 + i % 3, 50 + i});
  run({DType::kBf16, 128, 8, 2, 16, ragged}, 452);
}

TEST_F(PagedPrefillTest, EmptyContextsAndRequests) {
  std::uint64_t seed = 500;
  // Non-causal rows over an empty context: zeros and lse = -inf. Requests of q_len 0 inside.
  for (DType dt : {DType::kFloat, DType::kBf16})
    run({dt, 128, 4, 2, 16, {{0, 0}, {5, -5}, {0, 9}, {3, 0}}, false}, seed++);
  // Causal rows past the context (kv_len < q_len) see nothing either.
  run({DType::kHalf, 64, 2, 1, 8, {{9, -4}, {0, 0}, {1, 0}}}, seed++);
}

TEST_F(PagedPrefillTest, LayoutsAndStridedRows) {
  std::uint64_t seed = 600;
  for (Layout layout : {Layout::kNhd, Layout::kHnd, Layout::kCombined}) {
    for (int pad : {0, 24}) {
      run({DType::kBf16, 128, 8, 2, 16, {{40, 30}, {7, 0}}, true, layout, pad}, seed++);
      run({DType::kFloat, 64, 4, 2, 3, {{9, 4}}, false, layout, pad}, seed++);
    }
  }
}

TEST_F(PagedPrefillTest, CustomScaleAndNoLse) {
  run({DType::kHalf, 128, 8, 8, 32, {{70, 90}, {2, 500}}, true, Layout::kNhd, 0, false, 0.3f}, 700);
  run({DType::kBf16, 64, 32, 8, 16, {{128, 128}, {64, 0}}, true, Layout::kNhd, 0, true, 0.05f},
      701);
}

// q_len 1 after a context of n - 1 tokens is a decode step: both launchers agree.
template <class T>
void expect_equals_decode(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const int D = 128, Hq = 16, Hkv = 4, bs = 16;
  std::vector<Request> reqs;
  for (int len : {1, 100, 777, 2048, 31}) reqs.push_back({1, len - 1});
  const Tables t = make_tables(reqs, bs, rng);
  const std::size_t kv_elems = static_cast<std::size_t>(t.num_blocks) * bs * Hkv * D;
  const auto [q, k, v] =
      test::random_qkv<T>(static_cast<std::size_t>(t.total_q) * Hq * D, kv_elems, rng);
  DeviceBuffer<T> d_q(q), d_k(k), d_v(v), d_prefill(q.size()), d_decode(q.size());
  DeviceBuffer<std::int32_t> d_tables(t.table), d_lens(t.context_lens), d_indptr(t.qo_indptr);
  d_prefill.poison();
  d_decode.poison();
  const PagedKvCacheView<T> cache{d_k.data(), d_v.data(), t.num_blocks, bs, Hkv, D};
  const int n = static_cast<int>(reqs.size());
  const BlockTableView tables{d_tables.data(), d_lens.data(), n, t.max_blocks, t.row_stride, -1};
  paged_prefill(d_q.data(), Hq, PrefillBatchView{d_indptr.data(), n, 1}, cache, tables,
                d_prefill.data(), nullptr, nullptr);
  PagedDecodeOptions decode_options;
  decode_options.num_splits = 1;
  paged_decode(d_q.data(), Hq, cache, tables, d_decode.data(), nullptr, nullptr, 0, nullptr,
               decode_options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<T> a = d_prefill.download(), b = d_decode.download();
  double err2 = 0, ref2 = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<float>(a[i]), y = static_cast<float>(b[i]);
    ASSERT_TRUE(std::isfinite(x)) << i;
    err2 += (x - y) * (x - y);
    ref2 += y * y;
  }
  EXPECT_LT(std::sqrt(err2 / ref2), DTypeTraits<T>::is_16bit ? 1e-2 : 1e-6);
}

TEST_F(PagedPrefillTest, QueryLengthOneEqualsDecode) {
  expect_equals_decode<__nv_bfloat16>(800);
  expect_equals_decode<__half>(801);
  expect_equals_decode<float>(802);
}

// ---- argument validation: runs without a GPU (every check precedes any CUDA call) ----------
using test::fake_ptr;

struct ValidArgs {
  using T = __nv_bfloat16;
  const T* q = fake_ptr<T>();
  PrefillBatchView batch{fake_ptr<std::int32_t>(), 100, 60};
  PagedKvCacheView<T> cache{fake_ptr<T>(), fake_ptr<T>(), 100, 16, 2, 128};
  BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 4, 10, 10, -1};
  T* out = fake_ptr<T>();
  int num_q_heads = 8;
  PagedPrefillOptions options;
  void call() const {
    paged_prefill(q, num_q_heads, batch, cache, tables, out, nullptr, nullptr, options);
  }
};

template <class Mutate>
void expect_rejected(Mutate&& mutate, const char* needle) {
  ValidArgs a;
  mutate(a);
  test::expect_error<InvalidArgument>([&] { a.call(); }, needle);
}

TEST(PagedPrefillValidation, RejectsBadArguments) {
  expect_rejected([](ValidArgs& a) { a.q = nullptr; }, "q = nullptr");
  expect_rejected([](ValidArgs& a) { a.out = nullptr; }, "out = nullptr");
  expect_rejected([](ValidArgs& a) { a.cache.v = nullptr; }, "cache.v");
  expect_rejected([](ValidArgs& a) { a.batch.qo_indptr = nullptr; }, "batch.qo_indptr");
  expect_rejected([](ValidArgs& a) { a.tables.context_lens = nullptr; }, "context_lens");
  expect_rejected([](ValidArgs& a) { a.num_q_heads = 7; }, "num_q_heads = 7");
  expect_rejected([](ValidArgs& a) { a.cache.head_dim = 96; }, "head_dim = 96");
  expect_rejected([](ValidArgs& a) { a.cache.block_size = 0; }, "block_size = 0");
  expect_rejected([](ValidArgs& a) { a.tables.row_stride = 5; }, "row_stride = 5");
  expect_rejected([](ValidArgs& a) { a.tables.num_seqs = 70000; }, "num_seqs = 70000");
  expect_rejected([](ValidArgs& a) { a.batch.total_q = -1; }, "total_q = -1");
  expect_rejected([](ValidArgs& a) { a.batch.max_q_len = 101; }, "max_q_len = 101");
  expect_rejected([](ValidArgs& a) { a.batch.q_row_stride = 1000; }, "q_row_stride = 1000");
  expect_rejected([](ValidArgs& a) { a.batch.out_row_stride = 1028; }, "out_row_stride = 1028");
  expect_rejected([](ValidArgs& a) { a.cache.token_stride = 12; }, "cache strides");
  expect_rejected([](ValidArgs& a) { a.cache.head_stride = -8; }, "cache strides");
  expect_rejected([](ValidArgs& a) { a.q = fake_ptr<__nv_bfloat16>(4098); }, "q = ");
  expect_rejected([](ValidArgs& a) { a.options.scale = NAN; }, "options.scale");
  {  // empty batches are valid and launch nothing
    ValidArgs a;
    a.batch.total_q = 0;
    a.batch.max_q_len = 0;
    a.q = nullptr;
    EXPECT_NO_THROW(a.call());
    ValidArgs b;
    b.tables.num_seqs = 0;
    b.out = nullptr;
    EXPECT_NO_THROW(b.call());
  }
}

}  // namespace
}  // namespace radix_attention
