// paged_decode against the float64 reference: every dtype / head_dim instance, GQA groups 1..32,
// block sizes 1..128, context lengths 0..128k, random non-contiguous block placement,
// forced and automatic split-KV, NHD / HND / combined / padded K/V layouts and strided q / out
// rows (pads between rows checked untouched); plus argument validation (runs without a GPU).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/expect_error.hpp"
#include "support/fake_pointer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;
using test::Layout;

struct Case {
  DType dtype;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
  std::vector<int> context_lens;
  int num_splits = 0;  // 0: automatic
  bool with_lse = true;
  float scale = 0.f;
  Layout layout = Layout::kNhd;
  int row_pad = 0;  // extra elements between rows of q and of out (strided rows)
};

std::string name_of(DType d) {
  return d == DType::kFloat ? "float" : d == DType::kHalf ? "half" : "bf16";
}

template <class T>
void run_case(const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << name_of(c.dtype) << " D=" << c.head_dim << " Hq=" << c.num_q_heads
               << " Hkv=" << c.num_kv_heads << " bs=" << c.block_size << " splits=" << c.num_splits
               << " seqs=" << c.context_lens.size() << " layout=" << test::name_of(c.layout)
               << " pad=" << c.row_pad);
  std::mt19937_64 rng(seed);
  const int num_seqs = static_cast<int>(c.context_lens.size());
  const int bs = c.block_size;
  const int D = c.head_dim;
  int max_ctx = 0;
  int needed_blocks = 0;
  for (int len : c.context_lens) {
    max_ctx = std::max(max_ctx, len);
    needed_blocks += (len + bs - 1) / bs;
  }
  const int max_blocks = std::max(1, (max_ctx + bs - 1) / bs);
  const std::int64_t row_stride = max_blocks + 3;  // a stride that is not the row length
  const int num_blocks = needed_blocks + 5;        // spare blocks nobody uses

  // Random placement: every sequence draws its blocks from a shuffled pool.
  std::vector<std::int32_t> pool(num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  std::vector<std::int32_t> tables(static_cast<std::size_t>(num_seqs) * row_stride, -1);
  std::size_t next = 0;
  for (int s = 0; s < num_seqs; ++s) {
    for (int i = 0; i < (c.context_lens[s] + bs - 1) / bs; ++i)
      tables[s * row_stride + i] = pool[next++];
  }
  validate_block_tables(tables.data(), row_stride, c.context_lens.data(), num_seqs, max_blocks, bs,
                        num_blocks);

  const std::size_t kv_elems = static_cast<std::size_t>(num_blocks) * bs * c.num_kv_heads * D;
  const std::size_t q_elems = static_cast<std::size_t>(num_seqs) * c.num_q_heads * D;
  const auto [q, k, v] = test::random_qkv<T>(q_elems, kv_elems, rng);

  // q and out rows `row` elements apart, NaN between q's rows (a read of them would show).
  const std::int64_t row_elems = std::int64_t{c.num_q_heads} * D, row = row_elems + c.row_pad;
  const test::LaidOutKv<T> kv = test::lay_out_kv(k, v, c.layout, num_blocks, bs, c.num_kv_heads, D);
  DeviceBuffer<T> d_q(test::with_row_pads(q, num_seqs, row_elems, row, static_cast<T>(NAN)));
  DeviceBuffer<T> d_kv(kv.buffer), d_out(static_cast<std::size_t>(num_seqs) * row);
  DeviceBuffer<std::int32_t> d_tables(tables), d_lens(c.context_lens);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(num_seqs) * c.num_q_heads);
  d_out.poison();
  d_lse.poison();

  const PagedKvCacheView<T> cache = kv.view(d_kv.data(), num_blocks, bs, c.num_kv_heads, D);
  BlockTableView view{d_tables.data(), d_lens.data(), num_seqs, max_blocks, row_stride, -1};
  PagedDecodeOptions options;
  options.num_splits = c.num_splits;
  options.scale = c.scale;
  options.q_row_stride = c.row_pad != 0 ? row : 0;
  options.out_row_stride = c.row_pad != 0 ? row : 0;
  const std::size_t ws_bytes = paged_decode_workspace_bytes(c.num_q_heads, cache, view, options);
  DeviceBuffer<unsigned char> workspace(ws_bytes);
  workspace.poison();
  paged_decode(d_q.data(), c.num_q_heads, cache, view, d_out.data(),
               c.with_lse ? d_lse.data() : nullptr, workspace.data(), ws_bytes, nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  int pads_written = 0;
  const std::vector<T> out =
      test::dense_rows(d_out.download(), num_seqs, row_elems, row, pads_written);
  EXPECT_EQ(pads_written, 0) << "elements between output rows were written";
  const std::vector<float> lse = d_lse.download();

  const double scale = c.scale != 0.f ? c.scale : 1.0 / std::sqrt(double(D));
  std::vector<double> ref(q_elems), ref_lse(static_cast<std::size_t>(num_seqs) * c.num_q_heads);
  reference::HostPagedCache<T> host_cache{k.data(), v.data(), num_blocks, bs, c.num_kv_heads, D};
  reference::paged_decode(q.data(), host_cache, tables.data(), row_stride, c.context_lens.data(),
                          num_seqs, c.num_q_heads, scale, ref.data(), ref_lse.data());

  const double tol = c.dtype == DType::kFloat ? 1e-5 : 1e-2;
  test::expect_decode_matches(out, c.with_lse ? lse.data() : nullptr, ref, ref_lse.data(),
                              c.context_lens.data(), {num_seqs, c.num_q_heads, D}, tol);
}

void run(const Case& c, std::uint64_t seed) {
  test::with_dtype(c.dtype, [&](auto tag) { run_case<typename decltype(tag)::type>(c, seed); });
}

std::vector<int> random_lengths(int n, int lo, int hi, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<int> out(n);
  for (int& x : out) x = dist(rng);
  return out;
}

class PagedDecodeTest : public test::GpuTest {};

TEST_F(PagedDecodeTest, EveryDtypeAndHeadDim) {
  std::uint64_t seed = 1;
  for (DType dt : {DType::kFloat, DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) {
      run({dt, D, 8, 2, 16, {1, 37, 700, 0, 64}}, seed++);
    }
  }
}

TEST_F(PagedDecodeTest, GqaGroups) {
  std::uint64_t seed = 100;
  for (int group : {1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 32}) {
    run({DType::kBf16, 128, 2 * group, 2, 8, random_lengths(3, 1, 300, seed)}, seed++);
    run({DType::kFloat, 128, 2 * group, 2, 8, random_lengths(2, 1, 300, seed)}, seed++);
  }
  run({DType::kHalf, 64, 7, 1, 16, {513, 2}}, seed++);  // MQA-like, odd group
}

TEST_F(PagedDecodeTest, BlockSizes) {
  std::uint64_t seed = 200;
  for (int bs : {1, 8, 16, 32, 64, 128}) {
    run({DType::kBf16, 128, 8, 2, bs, random_lengths(4, 0, 1500, seed)}, seed++);
    run({DType::kFloat, 64, 4, 1, bs, random_lengths(2, 1, 600, seed)}, seed++);
  }
  run({DType::kHalf, 256, 4, 2, 3, {1000, 5}}, seed++);  // block size not a power of two
}

TEST_F(PagedDecodeTest, ContextLengthEdges) {
  std::uint64_t seed = 300;
  run({DType::kBf16, 128, 4, 4, 16, {0, 0, 0}}, seed++);
  run({DType::kFloat, 128, 4, 4, 16, {0, 0}}, seed++);
  run({DType::kBf16, 128, 8, 2, 16, {1, 63, 64, 65, 127, 128, 129}}, seed++);
  run({DType::kFloat, 256, 8, 2, 32, {1, 63, 64, 65, 4, 5}}, seed++);
}

TEST_F(PagedDecodeTest, LongContext128k) {
  run({DType::kBf16, 128, 8, 1, 16, {131072 + 17}}, 400);
  run({DType::kFloat, 128, 4, 1, 1, {131072 + 3}}, 401);
}

TEST_F(PagedDecodeTest, SplitKv) {
  std::uint64_t seed = 500;
  // Forced splits: short sequences leave some splits empty (lse = -inf partials).
  run({DType::kBf16, 128, 8, 2, 16, {5000, 3, 0, 900}, 7}, seed++);
  run({DType::kHalf, 64, 4, 4, 1, {2000, 100}, 3}, seed++);
  run({DType::kFloat, 128, 8, 2, 16, {3000, 1, 0}, 5}, seed++);
  run({DType::kBf16, 256, 16, 2, 8, {4000, 17}, 2, false}, seed++);
  // Automatic: 2 sequences x 1 kv head underfill any GPU, so this splits.
  run({DType::kBf16, 128, 4, 1, 16, {20000, 9000}}, seed++);
}

TEST_F(PagedDecodeTest, LayoutsAndStridedRows) {
  std::uint64_t seed = 700;
  for (Layout layout : {Layout::kNhd, Layout::kHnd, Layout::kCombined, Layout::kPaddedNhd}) {
    for (int pad : {0, 24}) {  // 24 elements: 48 bytes (16-bit) / 96 bytes (float)
      for (int bs : {1, 3, 16}) {
        Case c{DType::kBf16, 128, 8, 2, bs, {1, 37, 300, 0, 129}};
        c.layout = layout;
        c.row_pad = pad;
        run(c, seed++);
        c.dtype = DType::kHalf;
        c.head_dim = 64;
        c.num_q_heads = 12;  // group 6
        c.num_splits = 3;    // the merge writes the strided rows
        run(c, seed++);
        c = Case{DType::kFloat, 64, 4, 1, bs, {90, 5}};
        c.layout = layout;
        c.row_pad = pad;
        run(c, seed++);
        c.num_splits = 2;
        c.num_q_heads = 4;
        c.num_kv_heads = 4;  // group 1
        run(c, seed++);
      }
    }
  }
  // head_dim 256 and an automatic split on HND with strided rows.
  Case c{DType::kBf16, 256, 16, 2, 16, {5000, 17}};
  c.layout = Layout::kHnd;
  c.row_pad = 8;
  run(c, seed++);
}

TEST_F(PagedDecodeTest, LargeBatchAndCustomScale) {
  run({DType::kBf16, 128, 32, 8, 16, random_lengths(64, 0, 400, 600), 0, true}, 601);
  run({DType::kHalf, 128, 8, 8, 32, random_lengths(5, 1, 900, 602), 0, true, 0.3f}, 603);
}

// ---- argument validation: runs without a GPU (every check precedes any CUDA call) ----------
using test::fake_ptr;

struct ValidArgs {
  using T = __nv_bfloat16;
  const T* q = fake_ptr<T>();
  PagedKvCacheView<T> cache{fake_ptr<T>(), fake_ptr<T>(), 100, 16, 2, 128};
  BlockTableView tables{fake_ptr<std::int32_t>(), fake_ptr<std::int32_t>(), 4, 10, 10, -1};
  T* out = fake_ptr<T>();
  PagedDecodeOptions options{0.f, 1, 0};  // forced: no device query
  int num_q_heads = 8;
  void call(void* ws = nullptr, std::size_t ws_bytes = 0) const {
    paged_decode(q, num_q_heads, cache, tables, out, nullptr, ws, ws_bytes, nullptr, options);
  }
};

TEST(PagedDecodeValidation, RejectsBadArguments) {
  {
    ValidArgs a;
    a.q = nullptr;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.out = nullptr;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.cache.k = nullptr;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.tables.block_tables = nullptr;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.tables.context_lens = nullptr;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.num_q_heads = 7;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.num_q_heads = 0;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.cache.head_dim = 96;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.cache.block_size = 0;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.tables.row_stride = 5;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.tables.max_context_len = 161;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.q = fake_ptr<__nv_bfloat16>(4098);
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.cache.v = fake_ptr<__nv_bfloat16>(4104);
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.options.num_splits = -1;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.options.scale = INFINITY;
    EXPECT_THROW(a.call(), InvalidArgument);
  }
  {
    ValidArgs a;
    a.options.num_splits = 4;
    const std::size_t need =
        paged_decode_workspace_bytes(a.num_q_heads, a.cache, a.tables, a.options);
    EXPECT_GT(need, 0u);
    EXPECT_THROW(a.call(fake_ptr<void>(), need - 1), CapacityError);
    EXPECT_THROW(a.call(nullptr, need), InvalidArgument);
  }
  {  // the message names the argument and its value
    ValidArgs a;
    a.cache.head_dim = 96;
    try {
      a.call();
      ADD_FAILURE() << "no throw";
    } catch (const InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("head_dim = 96"), std::string::npos) << e.what();
    }
  }
  {  // an empty batch is valid and launches nothing
    ValidArgs a;
    a.tables.num_seqs = 0;
    a.q = nullptr;
    EXPECT_NO_THROW(a.call());
  }
}

TEST(PagedDecodeValidation, LayoutsAndRowStrides) {
  auto expect_rejected = [](auto&& mutate, const char* needle) {
    ValidArgs a;
    mutate(a);
    test::expect_error<InvalidArgument>([&] { a.call(); }, needle);
  };
  expect_rejected([](ValidArgs& a) { a.cache.token_stride = 12; }, "token 12");
  expect_rejected([](ValidArgs& a) { a.cache.head_stride = -8; }, "head -8");
  expect_rejected([](ValidArgs& a) { a.options.q_row_stride = 1000; }, "q_row_stride = 1000");
  expect_rejected([](ValidArgs& a) { a.options.out_row_stride = 1028; }, "out_row_stride = 1028");
  expect_rejected([](ValidArgs& a) { a.options.q_row_stride = -1024; }, "q_row_stride = -1024");
  // HND over 2^23 blocks: rows beyond 2^31 16-byte units, which the kernels cannot address.
  auto huge_hnd = [](ValidArgs& a) {
    a.cache.num_blocks = 1 << 23;
    a.cache.head_stride = 16 * 128;
    a.cache.token_stride = 128;
    a.cache.block_stride = 2 * 16 * 128;
  };
  expect_rejected(huge_hnd, "2^31 16-byte units");
  // Accepted without a launch (the workspace query validates the same shapes): that HND
  // layout on fewer blocks, the huge cache in NHD, a combined layout, strided rows.
  auto accepted = [](auto&& mutate) {
    ValidArgs a;
    mutate(a);
    EXPECT_EQ(paged_decode_workspace_bytes(a.num_q_heads, a.cache, a.tables, a.options), 0u);
  };
  accepted([&](ValidArgs& a) {
    huge_hnd(a);
    a.cache.num_blocks = 1 << 20;
  });
  accepted([](ValidArgs& a) { a.cache.num_blocks = 1 << 23; });
  accepted([](ValidArgs& a) {
    a.cache.token_stride = 2 * 128;
    a.cache.block_stride = 2 * 16 * 2 * 128;
  });
  accepted([](ValidArgs& a) {
    a.options.q_row_stride = 3 * 1024;  // q of a fused [tokens, (8 + 2 * 2) * 128] projection
    a.options.out_row_stride = 1032;
  });
}

}  // namespace
}  // namespace radix_attention
