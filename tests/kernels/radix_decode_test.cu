// radix_decode against the float64 reference over each query's FULL context: hand-built plans
// (one shared prefix, nested sharing, no sharing, split chunks, context 0, identical requests),
// random block placement, every dtype / head_dim, GQA groups, block sizes, NHD / HND /
// combined / padded K/V layouts with strided q / out rows (pads checked untouched); no-sharing
// plans against paged_decode; fixed grid; plan and argument validation (the latter without a
// GPU).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"
#include "support/radix_batch.hpp"
#include "support/radix_plan_from_segments.hpp"

namespace radix_attention {
namespace {

using test::build_batch;
using test::DeviceBuffer;
using test::DType;
using test::HostBatch;
using test::Layout;
using test::no_sharing;
using test::RadixSegmentSpec;
using test::Shape;
using test::shared_prefix;
using test::two_level;

struct Case {
  int head_dim = 128;
  int num_q_heads = 8;
  int num_kv_heads = 2;
  int block_size = 16;
  int max_chunk_tokens = 1 << 30;
  bool fixed_grid = false;
  float scale = 0.f;
  Layout layout = Layout::kNhd;
  int row_pad = 0;  // extra elements between rows of q and of out (strided rows)
};

template <class T>
void run_case(const Shape& shape, const Case& c, std::uint64_t seed, bool compare_paged = false) {
  SCOPED_TRACE(::testing::Message()
               << "D=" << c.head_dim << " Hq=" << c.num_q_heads << " Hkv=" << c.num_kv_heads
               << " bs=" << c.block_size << " chunk=" << c.max_chunk_tokens
               << " fixed=" << c.fixed_grid << " dtype=" << DTypeTraits<T>::name << " layout="
               << test::name_of(c.layout) << " pad=" << c.row_pad << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const HostBatch b = build_batch(shape, c.block_size, c.max_chunk_tokens, rng);
  const int D = c.head_dim;
  const std::size_t kv_elems =
      static_cast<std::size_t>(b.num_blocks) * c.block_size * c.num_kv_heads * D;
  const std::size_t q_elems = static_cast<std::size_t>(b.num_queries) * c.num_q_heads * D;
  const auto [q, k, v] = test::random_qkv<T>(q_elems, kv_elems, rng);

  // q and out rows `row` elements apart, NaN between q's rows (a read of them would show).
  const std::int64_t row_elems = std::int64_t{c.num_q_heads} * D, row = row_elems + c.row_pad;
  const test::LaidOutKv<T> kv =
      test::lay_out_kv(k, v, c.layout, b.num_blocks, c.block_size, c.num_kv_heads, D);
  DeviceBuffer<T> d_q(test::with_row_pads(q, b.num_queries, row_elems, row, static_cast<T>(NAN)));
  DeviceBuffer<T> d_kv(kv.buffer), d_out(static_cast<std::size_t>(b.num_queries) * row);
  DeviceBuffer<std::int32_t> d_tables(b.tables), d_lens(b.context_lens);
  DeviceBuffer<float> d_lse(static_cast<std::size_t>(b.num_queries) * c.num_q_heads);
  const PagedKvCacheView<T> cache =
      kv.view(d_kv.data(), b.num_blocks, c.block_size, c.num_kv_heads, D);
  BlockTableView view{d_tables.data(), d_lens.data(), b.num_queries,
                      b.max_blocks,    b.row_stride,  -1};

  DeviceRadixPlan plan;
  plan.upload(b.plan, b.context_lens, c.num_q_heads / c.num_kv_heads, nullptr);
  const std::size_t ws_bytes = radix_decode_workspace_bytes(plan, c.num_q_heads, D);
  DeviceBuffer<unsigned char> workspace(std::max<std::size_t>(ws_bytes, 16));
  RadixDecodeOptions options;
  options.scale = c.scale;
  options.fixed_grid = c.fixed_grid;
  options.expected_batch_fingerprint = 0x1234;
  options.q_row_stride = c.row_pad != 0 ? row : 0;
  options.out_row_stride = c.row_pad != 0 ? row : 0;

  const double scale = c.scale != 0.f ? c.scale : 1.0 / std::sqrt(double(D));
  std::vector<double> ref(q_elems),
      ref_lse(static_cast<std::size_t>(b.num_queries) * c.num_q_heads);
  reference::HostPagedCache<T> host_cache{k.data(),     v.data(),       b.num_blocks,
                                          c.block_size, c.num_kv_heads, D};
  reference::paged_decode(q.data(), host_cache, b.tables.data(), b.row_stride,
                          b.context_lens.data(), b.num_queries, c.num_q_heads, scale, ref.data(),
                          ref_lse.data());
  const bool is_float = std::is_same_v<T, float>;
  const double tol = is_float ? 1e-5 : 1e-2;

  // 16-bit inputs: the TMA wgmma kernel where the shape suits it, then the mma.sync kernel
  // (float: the CUDA-core kernel, whatever is asked).
  std::vector<T> out;
  double ref2 = 0.0;
  int pads_written = 0;
  for (const bool tma : {true, false}) {
    if (!tma && is_float) break;
    SCOPED_TRACE(tma ? "kernel kTma" : "kernel kMma");
    options.kernel = tma ? RadixDecodeKernel::kTma : RadixDecodeKernel::kMma;
    d_out.poison();
    d_lse.poison();
    workspace.poison();
    radix_decode(d_q.data(), c.num_q_heads, cache, view, plan, d_out.data(), d_lse.data(),
                 workspace.data(), ws_bytes, nullptr, options);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
    out = test::dense_rows(d_out.download(), b.num_queries, row_elems, row, pads_written);
    EXPECT_EQ(pads_written, 0) << "elements between output rows were written";
    const std::vector<float> lse = d_lse.download();
    ref2 = test::expect_decode_matches(out, lse.data(), ref, ref_lse.data(), b.context_lens.data(),
                                       {b.num_queries, c.num_q_heads, D}, tol,
                                       /*per_element=*/true);
  }

  if (compare_paged) {
    DeviceBuffer<T> d_paged(static_cast<std::size_t>(b.num_queries) * row);
    d_paged.poison();
    PagedDecodeOptions po;
    po.scale = c.scale;
    po.q_row_stride = options.q_row_stride;
    po.out_row_stride = options.out_row_stride;
    const std::size_t pws = paged_decode_workspace_bytes(c.num_q_heads, cache, view, po);
    DeviceBuffer<unsigned char> pwork(std::max<std::size_t>(pws, 16));
    paged_decode(d_q.data(), c.num_q_heads, cache, view, d_paged.data(), nullptr, pwork.data(), pws,
                 nullptr, po);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<T> paged =
        test::dense_rows(d_paged.download(), b.num_queries, row_elems, row, pads_written);
    EXPECT_EQ(pads_written, 0) << "paged_decode wrote between output rows";
    double diff2 = 0.0, paged_err2 = 0.0;
    for (std::size_t i = 0; i < q_elems; ++i) {
      const double dlt = static_cast<float>(out[i]) - static_cast<float>(paged[i]);
      const double pe = static_cast<float>(paged[i]) - ref[i];
      diff2 += dlt * dlt;
      paged_err2 += pe * pe;
    }
    if (ref2 > 0) {
      EXPECT_LT(std::sqrt(diff2 / ref2), tol)
          << "radix_decode differs from paged_decode; paged_decode's own error against the "
             "reference is "
          << std::sqrt(paged_err2 / ref2);
    }
  }
}

void run(DType dt, const Shape& shape, const Case& c, std::uint64_t seed,
         bool compare_paged = false) {
  test::with_dtype(
      dt, [&](auto tag) { run_case<typename decltype(tag)::type>(shape, c, seed, compare_paged); });
}

class RadixDecodeTest : public test::GpuTest {};

TEST_F(RadixDecodeTest, SharedPrefixEveryDtypeAndHeadDim) {
  std::uint64_t seed = 1;
  for (DType dt : {DType::kFloat, DType::kHalf, DType::kBf16}) {
    for (int D : {64, 128, 256}) {
      Case c;
      c.head_dim = D;
      run(dt, shared_prefix(9, 160, {1, 37, 70, 16}), c, seed++);
    }
  }
}

TEST_F(RadixDecodeTest, ManyQueriesSplitRowsOverCtas) {
  // 40 queries x group 4 = 160 rows: three row tiles of one shared chunk.
  Case c;
  c.max_chunk_tokens = 300;
  run(DType::kBf16, shared_prefix(40, 1024, {5, 130}), c, 10);
  run(DType::kHalf, shared_prefix(20, 512, {64}), c, 11);
  run(DType::kFloat, shared_prefix(17, 96, {3}), c, 12);
}

TEST_F(RadixDecodeTest, NestedTwoLevelSharing) {
  Case c;
  c.max_chunk_tokens = 256;
  run(DType::kBf16, two_level(3, 5, 256, 128, 20), c, 20);
  run(DType::kFloat, two_level(2, 3, 64, 48, 7), c, 21);
  c.block_size = 1;
  run(DType::kHalf, two_level(3, 4, 100, 33, 9), c, 22);
}

TEST_F(RadixDecodeTest, ChunkedSegmentsAndUnalignedChunks) {
  Case c;
  for (int chunk : {1, 17, 64, 100, 1000}) {
    c.max_chunk_tokens = chunk;
    run(DType::kBf16, shared_prefix(5, 400, {50, 1}), c, 30 + chunk);
  }
}

TEST_F(RadixDecodeTest, ContextZeroAndIdenticalRequests) {
  Case c;
  Shape s = shared_prefix(4, 64, {10});
  s.queries.push_back({});  // a query with context 0: no partials
  run(DType::kBf16, s, c, 40);
  run(DType::kFloat, s, c, 41);
  // Identical requests: every query holds the same pieces, the partial last block too.
  Shape same;
  same.piece_len = {128, 45};
  for (int i = 0; i < 6; ++i) same.queries.push_back({0, 1});
  run(DType::kHalf, same, c, 42);
  Shape empty;
  empty.piece_len = {};
  empty.queries = {{}, {}};
  run(DType::kBf16, empty, c, 43);
}

TEST_F(RadixDecodeTest, GqaGroups) {
  std::uint64_t seed = 50;
  for (int group : {1, 2, 3, 4, 5, 6, 7, 8, 16}) {
    Case c;
    c.num_q_heads = 2 * group;
    c.num_kv_heads = 2;
    c.max_chunk_tokens = 200;
    run(DType::kBf16, shared_prefix(6, 192, {1, 77}), c, seed++);
    run(DType::kFloat, shared_prefix(3, 64, {9}), c, seed++);
  }
}

TEST_F(RadixDecodeTest, BlockSizes) {
  std::uint64_t seed = 70;
  for (int bs : {1, 8, 16, 32, 64, 128}) {
    Case c;
    c.block_size = bs;
    c.max_chunk_tokens = 384;
    run(DType::kBf16, shared_prefix(7, 3 * 128, {1, 100, 129}), c, seed++);
    run(DType::kFloat, shared_prefix(2, 128, {30}), c, seed++);
  }
}

TEST_F(RadixDecodeTest, ScaleAndFixedGrid) {
  Case c;
  c.scale = 0.3f;
  run(DType::kBf16, shared_prefix(8, 256, {40}), c, 80);
  c.fixed_grid = true;
  c.max_chunk_tokens = 64;
  run(DType::kBf16, two_level(4, 8, 512, 256, 30), c, 81);
  run(DType::kFloat, shared_prefix(3, 64, {9}), c, 82);
}

TEST_F(RadixDecodeTest, LayoutsAndStridedRows) {
  std::uint64_t seed = 100;
  for (Layout layout : {Layout::kNhd, Layout::kHnd, Layout::kCombined, Layout::kPaddedNhd}) {
    for (int pad : {0, 24}) {  // 24 elements: 48 bytes (16-bit) / 96 bytes (float)
      for (int bs : {1, 3, 16}) {
        Case c;
        c.block_size = bs;
        c.layout = layout;
        c.row_pad = pad;
        c.max_chunk_tokens = 100;  // shared and private chunks, some items of several tiles
        // Piece lengths are multiples of 48 where shared (whole blocks for 1, 3 and 16).
        run(DType::kBf16, shared_prefix(9, 192, {1, 37, 70}), c, seed++);
        c.num_q_heads = 12;  // group 6
        c.head_dim = 64;
        run(DType::kHalf, two_level(2, 3, 96, 48, 5), c, seed++);
        c.num_q_heads = 4;
        c.num_kv_heads = 1;
        run(DType::kFloat, shared_prefix(3, 48, {9}), c, seed++);
      }
    }
  }
  // head_dim 256, fixed grid, against paged_decode on the same strided tensors.
  Case c;
  c.head_dim = 256;
  c.layout = Layout::kCombined;
  c.row_pad = 8;
  c.fixed_grid = true;
  c.max_chunk_tokens = 256;
  run(DType::kBf16, no_sharing({700, 33, 256}), c, seed++, true);
  c.layout = Layout::kHnd;
  c.head_dim = 128;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  run(DType::kHalf, shared_prefix(5, 512, {20}), c, seed++);
}

TEST_F(RadixDecodeTest, NoSharingEqualsPagedDecode) {
  Case c;
  c.max_chunk_tokens = 512;
  run(DType::kBf16, no_sharing({1, 37, 700, 2048, 64, 5}), c, 90, true);
  run(DType::kHalf, no_sharing({300, 1}), c, 91, true);
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  run(DType::kBf16, no_sharing({4096, 4096, 1000}), c, 92, true);
}

// ---- Plan and argument validation: typed errors before any CUDA call (run without a GPU). ----

RadixPlan small_plan(std::vector<std::int32_t>& lens) {
  lens = {100, 120, 0};
  return test::radix_plan_from_segments(
      3, {{0, 0, 64, {0, 1}}, {0, 64, 100, {0}}, {1, 64, 120, {1}}}, 1000);
}

TEST(RadixDecodeValidation, PackedLayoutCoversEveryRow) {
  std::vector<std::int32_t> lens;
  const RadixPlan plan = small_plan(lens);
  RadixPlanCapacity cap;
  std::vector<std::int32_t> packed;
  const RadixPlanSummary s = detail::pack_radix_plan(plan, lens, 40, cap, packed);
  EXPECT_EQ(s.num_chunks, 3);
  EXPECT_EQ(s.num_partials, 4);
  EXPECT_EQ(s.max_token_end, 120);
  // Chunk 0 has 2 queries x 40 heads = 80 rows: two tiles; the others one each.
  EXPECT_EQ(s.num_items, 4);
  EXPECT_EQ(packed[detail::kHeaderNumItems], 4);
  const detail::RadixPlanOffsets o = detail::radix_plan_offsets(cap);
  EXPECT_EQ(static_cast<std::int64_t>(packed.size()), o.total);
  std::vector<int> rows_seen(3, 0);
  for (int i = 0; i < 4; ++i) {
    const int c = packed[o.items + i * kRadixItemWords];
    const int r = packed[o.items + i * kRadixItemWords + 1];
    const int chunk_rows = (plan.chunk_query_indptr[c + 1] - plan.chunk_query_indptr[c]) * 40;
    rows_seen[c] += std::min(kRadixRowsPerTile, chunk_rows - r);
  }
  EXPECT_EQ(rows_seen, (std::vector<int>{80, 40, 40}));
  // Largest first: the two tiles of the 64-token shared chunk lead.
  EXPECT_EQ(packed[o.items], 0);
  // The wgmma kernel's list follows: one 128-row tile per chunk here, the shared one first.
  EXPECT_EQ(s.num_wide_items, 3);
  EXPECT_EQ(packed[detail::kHeaderNumWideItems], 3);
  std::vector<int> wide_rows(3, 0);
  for (int i = 0; i < 3; ++i) {
    const int* item = &packed[o.items + (4 + i) * kRadixItemWords];
    wide_rows[item[0]] += item[2];
    EXPECT_EQ(item[1], 0);
  }
  EXPECT_EQ(wide_rows, (std::vector<int>{80, 40, 40}));
  EXPECT_EQ(packed[o.items + 4 * kRadixItemWords], 0);
  // The 80-row shared chunk is what the wgmma kernel is for; 8 heads leave every chunk <= 64
  // rows (the mma.sync kernel), unless the plan is batch-invariant (one kernel for any batch).
  EXPECT_EQ(s.num_shared_wide_items, 1);
  EXPECT_FALSE(s.batch_invariant);
  EXPECT_TRUE(detail::radix_plan_prefers_tma(s));
  RadixPlanCapacity cap8;
  std::vector<std::int32_t> packed8;
  const RadixPlanSummary s8 = detail::pack_radix_plan(plan, lens, 8, cap8, packed8);
  EXPECT_EQ(s8.num_shared_wide_items, 0);
  EXPECT_FALSE(detail::radix_plan_prefers_tma(s8));
  RadixPlan invariant = plan;
  invariant.rows_per_item = kRadixBatchInvariantRows;
  const RadixPlanSummary si = detail::pack_radix_plan(invariant, lens, 8, cap8, packed8);
  EXPECT_TRUE(si.batch_invariant);
  EXPECT_TRUE(detail::radix_plan_prefers_tma(si));
  // A smaller plan reuses the capacity (same offsets: graph-stable device addresses).
  const RadixPlanCapacity before = cap;
  RadixPlan smaller = test::radix_plan_from_segments(3, {{0, 0, 100, {0}}, {1, 0, 120, {1}}}, 1000);
  detail::pack_radix_plan(smaller, lens, 40, cap, packed);
  EXPECT_EQ(cap.chunks, before.chunks);
  EXPECT_EQ(cap.partials, before.partials);
}

TEST(RadixDecodeValidation, BadPlansThrowAndChangeNothing) {
  std::vector<std::int32_t> lens;
  const RadixPlan good = small_plan(lens);
  DeviceRadixPlan device_plan;  // no CUDA call happens before validation passes
  auto expect_rejected = [&](const RadixPlan& bad, const std::vector<std::int32_t>& l,
                             const char* what) {
    RadixPlanCapacity cap;
    std::vector<std::int32_t> packed{7};
    EXPECT_THROW(detail::pack_radix_plan(bad, l, 4, cap, packed), InvalidArgument) << what;
    EXPECT_EQ(packed, std::vector<std::int32_t>{7}) << what;
    EXPECT_EQ(cap.chunks, 0) << what;
    EXPECT_THROW(device_plan.upload(bad, l, 4, nullptr), InvalidArgument) << what;
    EXPECT_FALSE(device_plan.uploaded()) << what;
  };
  RadixPlan bad = good;
  bad.chunk_queries[1] = 3;  // query id out of range
  expect_rejected(bad, lens, "query id out of range");
  bad = good;
  bad.chunk_token_end[2] = 121;  // past query 1's context
  expect_rejected(bad, lens, "segment past a context length");
  std::vector<std::int32_t> longer = lens;
  longer[2] = 5;  // query 2 has context but no partials
  expect_rejected(good, longer, "query with no partials");
  expect_rejected(good, {100, 120}, "context_lens of another batch");
  RadixPlanCapacity cap;
  std::vector<std::int32_t> packed;
  EXPECT_THROW(detail::pack_radix_plan(good, lens, 0, cap, packed), InvalidArgument);
}

TEST(RadixDecodeValidation, LauncherArgumentsThrowBeforeLaunch) {
  using T = __nv_bfloat16;
  T* fake = reinterpret_cast<T*>(std::uintptr_t{1} << 20);  // never dereferenced: checks come first
  PagedKvCacheView<T> cache{fake, fake, 64, 16, 2, 128};
  BlockTableView tables{reinterpret_cast<const std::int32_t*>(fake), nullptr, 3, 8, 8, -1};
  DeviceRadixPlan plan;
  std::vector<unsigned char> ws;
  auto call = [&](const T* q, int hq, const PagedKvCacheView<T>& kv,
                  const RadixDecodeOptions& o = {}) {
    radix_decode<T>(q, hq, kv, tables, plan, fake, nullptr, fake, 1 << 20, nullptr, o);
  };
  EXPECT_THROW(call(nullptr, 8, cache), InvalidArgument);
  EXPECT_THROW(call(fake + 1, 8, cache), InvalidArgument);  // misaligned q
  EXPECT_THROW(call(fake, 7, cache), InvalidArgument);      // not a multiple of kv heads
  EXPECT_THROW(call(fake, 0, cache), InvalidArgument);
  auto bad = cache;
  bad.head_dim = 96;
  EXPECT_THROW(call(fake, 8, bad), InvalidArgument);
  bad = cache;
  bad.k = nullptr;
  EXPECT_THROW(call(fake, 8, bad), InvalidArgument);
  bad = cache;
  bad.block_size = 0;
  EXPECT_THROW(call(fake, 8, bad), InvalidArgument);
  RadixDecodeOptions neg;
  neg.scale = -1.f;
  EXPECT_THROW(call(fake, 8, cache, neg), InvalidArgument);
  bad = cache;
  bad.token_stride = 12;  // 24 bytes: not a multiple of 16
  EXPECT_THROW(call(fake, 8, bad), InvalidArgument);
  RadixDecodeOptions strided;
  strided.q_row_stride = 1000;  // < 8 heads x 128
  EXPECT_THROW(call(fake, 8, cache, strided), InvalidArgument);
  strided.q_row_stride = 0;
  strided.out_row_stride = 1028;  // not a multiple of 16 bytes
  EXPECT_THROW(call(fake, 8, cache, strided), InvalidArgument);
  // Valid layouts and strides get as far as the plan check.
  strided.q_row_stride = 3 * 1024;
  strided.out_row_stride = 1032;
  EXPECT_THROW(call(fake, 8, cache, strided), StateError);
  auto hnd = cache;
  hnd.head_stride = 16 * 128;
  hnd.token_stride = 128;
  hnd.block_stride = 2 * 16 * 128;
  EXPECT_THROW(call(fake, 8, hnd), StateError);
  hnd.num_blocks = 1 << 23;  // HND rows beyond 2^31 16-byte units
  EXPECT_THROW(call(fake, 8, hnd), InvalidArgument);
  EXPECT_THROW(call(fake, 8, cache), StateError);  // valid arguments, but no plan uploaded
  EXPECT_THROW(radix_decode_workspace_bytes(-1, 8, 128), InvalidArgument);
}

TEST_F(RadixDecodeTest, LauncherRejectsMismatchedOrStalePlans) {
  using T = __nv_bfloat16;
  std::mt19937_64 rng(5);
  const HostBatch b = build_batch(shared_prefix(3, 64, {20}), 16, 1000, rng);
  const int hq = 8, hkv = 2, D = 128;
  const std::size_t q_elems = static_cast<std::size_t>(b.num_queries) * hq * D;
  const std::size_t kv_elems = static_cast<std::size_t>(b.num_blocks) * 16 * hkv * D;
  DeviceBuffer<T> d_q(test::random_vector<T>(q_elems, rng)),
      d_k(test::random_vector<T>(kv_elems, rng));
  DeviceBuffer<T> d_out(q_elems);
  DeviceBuffer<std::int32_t> d_tables(b.tables);
  d_out.poison();
  PagedKvCacheView<T> cache{d_k.data(), d_k.data(), b.num_blocks, 16, hkv, D};
  BlockTableView tables{d_tables.data(), nullptr, b.num_queries, b.max_blocks, b.row_stride, -1};
  DeviceRadixPlan plan;
  plan.upload(b.plan, b.context_lens, hq / hkv, nullptr);
  const std::size_t ws = radix_decode_workspace_bytes(plan, hq, D);
  DeviceBuffer<unsigned char> work(ws);
  auto call = [&](int q_heads, const BlockTableView& t, std::size_t bytes, RadixDecodeOptions o) {
    radix_decode<T>(d_q.data(), q_heads, cache, t, plan, d_out.data(), nullptr, work.data(), bytes,
                    nullptr, o);
  };
  RadixDecodeOptions stale;
  stale.expected_batch_fingerprint = 0x9999;
  EXPECT_THROW(call(hq, tables, ws, stale), StateError);
  EXPECT_THROW(call(hq, tables, ws - 1, {}), CapacityError);
  EXPECT_THROW(call(2 * hq, tables, 1 << 30, {}), InvalidArgument);  // group size differs
  BlockTableView fewer = tables;
  fewer.num_seqs = 2;
  EXPECT_THROW(call(hq, fewer, ws, {}), InvalidArgument);  // plan built for another batch
  BlockTableView narrow = tables;
  narrow.max_blocks_per_seq = 1;
  EXPECT_THROW(call(hq, narrow, ws, {}), InvalidArgument);  // chunks past the table's width
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = d_out.download();
  const auto* bytes = reinterpret_cast<const unsigned char*>(out.data());
  EXPECT_TRUE(std::all_of(bytes, bytes + out.size() * sizeof(T), [](unsigned char x) {
    return x == 0xFF;
  })) << "nothing may be launched on a throw";
  // A failed upload keeps the previous plan.
  RadixPlan bad = b.plan;
  bad.chunk_queries[0] = 99;
  EXPECT_THROW(plan.upload(bad, b.context_lens, hq / hkv, nullptr), InvalidArgument);
  EXPECT_TRUE(plan.uploaded());
  EXPECT_EQ(plan.batch_fingerprint(), 0x1234u);
}

TEST_F(RadixDecodeTest, SteadyStateUploadsKeepDeviceAddresses) {
  std::mt19937_64 rng(6);
  const HostBatch big = build_batch(shared_prefix(8, 64, {20}), 16, 16, rng);
  const HostBatch small = build_batch(shared_prefix(4, 32, {20}), 16, 1000, rng);
  DeviceRadixPlan plan;
  plan.upload(big.plan, big.context_lens, 4, nullptr);
  const RadixPlanView first = plan.view();
  const RadixPlanCapacity cap = plan.capacity();
  plan.upload(small.plan, small.context_lens, 4, nullptr);
  EXPECT_EQ(plan.view().items, first.items);
  EXPECT_EQ(plan.capacity().partials, cap.partials);
  EXPECT_EQ(plan.num_queries(), 4);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace radix_attention
