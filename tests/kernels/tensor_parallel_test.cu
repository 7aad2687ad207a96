// Tensor parallelism on one GPU: every rank's radix_decode (one plan for all ranks, uploaded
// with the rank's group size) and paged_decode run one after another on head slices of the
// same tensors (q a slice of a fused QKV projection, cache sliced by slice_kv_heads, out rows
// the full row stride apart), for TP 1, 2, 4, 8 with and without kv-head replication. The
// combined output must equal the unsharded launch and the float64 reference.
//
// Bitwise or within tolerance: when a rank's group size equals the model's (TP <= kv heads),
// each CTA of a rank computes exactly what the unsharded CTA of its kv head computes (same
// work items, same rows in the same tile positions, same K/V and q values, same split and
// merge order), so the outputs and LSEs must be bitwise equal (paged_decode with a fixed split
// count: an automatic one depends on the number of kv heads). With replication (TP > kv heads)
// a rank's group is smaller: the radix kernel tiles the rows differently and may split the
// tokens over its warps differently (another summation order), so only the tolerance of the
// dtype holds (1e-2 for 16-bit, 1e-5 for float, relative).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "radix_attention/core/head_range.hpp"
#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"
#include "support/radix_plan_from_segments.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;
using test::Layout;

struct Model {
  DType dtype;
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
  Layout layout = Layout::kNhd;
};

/// n queries sharing a `prefix`-token prompt (whole blocks), each with a private suffix, blocks
/// placed at random; the plan has one shared segment and one private segment per query.
struct Batch {
  int num_queries = 0;
  int max_blocks = 1;
  std::int64_t row_stride = 1;
  int num_blocks = 0;
  std::vector<std::int32_t> tables, lens;
  RadixPlan plan;
};

Batch make_batch(int bs, int prefix, const std::vector<int>& suffix, std::mt19937_64& rng) {
  Batch b;
  b.num_queries = static_cast<int>(suffix.size());
  const int prefix_blocks = prefix / bs;
  int total = prefix_blocks;
  for (int s : suffix) {
    total += (s + bs - 1) / bs;
    b.lens.push_back(prefix + s);
    b.max_blocks = std::max(b.max_blocks, (prefix + s + bs - 1) / bs);
  }
  b.num_blocks = total + 3;
  b.row_stride = b.max_blocks + 1;
  std::vector<std::int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  b.tables.assign(static_cast<std::size_t>(b.num_queries) * b.row_stride, -1);
  std::size_t next = prefix_blocks;
  std::vector<test::RadixSegmentSpec> segments;
  std::vector<std::int32_t> all(b.num_queries);
  std::iota(all.begin(), all.end(), 0);
  if (prefix > 0) segments.push_back({0, 0, prefix, all});
  for (int q = 0; q < b.num_queries; ++q) {
    for (int i = 0; i < prefix_blocks; ++i) b.tables[q * b.row_stride + i] = pool[i];
    for (int i = prefix_blocks; i < (b.lens[q] + bs - 1) / bs; ++i)
      b.tables[q * b.row_stride + i] = pool[next++];
    if (suffix[q] > 0) segments.push_back({q, prefix, b.lens[q], {q}});
  }
  b.plan = test::radix_plan_from_segments(b.num_queries, segments, /*max_chunk_tokens=*/128);
  return b;
}

/// Relative L2 difference of two outputs (float64), and whether they are bitwise equal.
template <class T>
double relative_difference(const std::vector<T>& a, const std::vector<T>& b, bool& bitwise) {
  bitwise = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
  double d2 = 0, r2 = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<float>(a[i]), y = static_cast<float>(b[i]);
    d2 += (x - y) * (x - y);
    r2 += y * y;
  }
  return r2 > 0 ? std::sqrt(d2 / r2) : std::sqrt(d2);
}

/// Outputs of one way of running the batch: out [n, Hq, D] (dense) and lse [n, Hq].
template <class T>
struct Result {
  std::vector<T> out;
  std::vector<float> lse;
};

template <class T>
class Harness {
 public:
  Harness(const Model& m, const Batch& b, std::mt19937_64& rng) : m_(m), b_(b) {
    const int D = m.head_dim, n = b.num_queries;
    // q is the first num_q_heads * D elements of each row of a fused QKV projection
    // [n, (Hq + 2 Hkv) * D]; the K/V part of the rows is NaN (it must not be read).
    qkv_row_ = std::int64_t{m.num_q_heads + 2 * m.num_kv_heads} * D;
    q_elems_ = std::int64_t{m.num_q_heads} * D;
    const std::size_t kv_elems =
        static_cast<std::size_t>(b.num_blocks) * m.block_size * m.num_kv_heads * D;
    const auto qkv = test::random_qkv<T>(static_cast<std::size_t>(n) * q_elems_, kv_elems, rng);
    q_ = qkv.q;
    k_ = qkv.k;
    v_ = qkv.v;
    d_q_ = DeviceBuffer<T>(test::with_row_pads(q_, n, q_elems_, qkv_row_, static_cast<T>(NAN)));
    kv_ = test::lay_out_kv(k_, v_, m.layout, b.num_blocks, m.block_size, m.num_kv_heads, D);
    d_kv_ = DeviceBuffer<T>(kv_.buffer);
    d_tables_ = DeviceBuffer<std::int32_t>(b.tables);
    d_lens_ = DeviceBuffer<std::int32_t>(b.lens);
    cache_ = kv_.view(d_kv_.data(), b.num_blocks, m.block_size, m.num_kv_heads, D);
    tables_ = BlockTableView{d_tables_.data(), d_lens_.data(), n, b.max_blocks, b.row_stride, -1};
  }

  const std::vector<T>& q() const { return q_; }
  const std::vector<T>& k() const { return k_; }
  const std::vector<T>& v() const { return v_; }

  /// Runs the model's heads as `tp` ranks one after another (tp = 1: the unsharded launch),
  /// radix_decode when `radix`, else paged_decode with `splits` (0 = automatic).
  Result<T> run(int tp, bool radix, int splits) {
    const int D = m_.head_dim, n = b_.num_queries, hq = m_.num_q_heads;
    // The combined output: rows of hq * D + 8 elements (pads checked untouched).
    const std::int64_t out_row = q_elems_ + 8;
    DeviceBuffer<T> d_out(static_cast<std::size_t>(n) * out_row);
    d_out.poison();
    std::vector<float> lse(static_cast<std::size_t>(n) * hq);
    DeviceRadixPlan plan;  // one plan for every rank
    for (int r = 0; r < tp; ++r) {
      const TensorParallelHeads h = tensor_parallel_heads(hq, m_.num_kv_heads, tp, r);
      const PagedKvCacheView<T> cache = slice_kv_heads(cache_, h.kv.first, h.kv.count);
      const T* q = d_q_.data() + std::int64_t{h.q.first} * D;
      T* out = d_out.data() + std::int64_t{h.q.first} * D;
      DeviceBuffer<float> d_lse(static_cast<std::size_t>(n) * h.q.count);  // dense per rank
      d_lse.poison();
      if (radix) {
        if (r == 0) plan.upload(b_.plan, b_.lens, h.q.count / h.kv.count, nullptr);
        RadixDecodeOptions o;
        o.q_row_stride = qkv_row_;
        o.out_row_stride = out_row;
        const std::size_t ws = radix_decode_workspace_bytes(plan, h.q.count, D);
        DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
        radix_decode(q, h.q.count, cache, tables_, plan, out, d_lse.data(), work.data(), ws,
                     nullptr, o);
      } else {
        PagedDecodeOptions o;
        o.num_splits = splits;
        o.q_row_stride = qkv_row_;
        o.out_row_stride = out_row;
        const std::size_t ws = paged_decode_workspace_bytes(h.q.count, cache, tables_, o);
        DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
        paged_decode(q, h.q.count, cache, tables_, out, d_lse.data(), work.data(), ws, nullptr, o);
      }
      RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> rank_lse = d_lse.download();
      for (int s = 0; s < n; ++s)
        for (int i = 0; i < h.q.count; ++i)
          lse[static_cast<std::size_t>(s) * hq + h.q.first + i] = rank_lse[s * h.q.count + i];
    }
    int pads_written = 0;
    Result<T> result{test::dense_rows(d_out.download(), n, q_elems_, out_row, pads_written), lse};
    EXPECT_EQ(pads_written, 0) << "elements between output rows were written (tp " << tp << ")";
    return result;
  }

 private:
  Model m_;
  const Batch& b_;
  std::int64_t qkv_row_ = 0, q_elems_ = 0;
  std::vector<T> q_, k_, v_;
  test::LaidOutKv<T> kv_;
  DeviceBuffer<T> d_q_, d_kv_;
  DeviceBuffer<std::int32_t> d_tables_, d_lens_;
  PagedKvCacheView<T> cache_{};
  BlockTableView tables_{};
};

template <class T>
void run_model(const Model& m, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << DTypeTraits<T>::name << " D=" << m.head_dim << " Hq=" << m.num_q_heads
               << " Hkv=" << m.num_kv_heads << " bs=" << m.block_size
               << " layout=" << test::name_of(m.layout) << " seed=" << seed);
  std::mt19937_64 rng(seed);
  const int prefix = 16 * 3 * 4;  // whole blocks for block sizes 1, 3 and 16
  const Batch b = make_batch(m.block_size, prefix, {1, 40, 0, 130, 7, 64}, rng);
  Harness<T> harness(m, b, rng);
  const int n = b.num_queries, hq = m.num_q_heads, D = m.head_dim;

  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> ref(static_cast<std::size_t>(n) * hq * D),
      ref_lse(static_cast<std::size_t>(n) * hq);
  const reference::HostPagedCache<T> host{harness.k().data(), harness.v().data(), b.num_blocks,
                                          m.block_size,       m.num_kv_heads,     D};
  reference::paged_decode(harness.q().data(), host, b.tables.data(), b.row_stride, b.lens.data(), n,
                          hq, scale, ref.data(), ref_lse.data());
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-2;

  struct Launch {
    bool radix;
    int splits;
    const char* name;
  };
  for (const Launch l :
       {Launch{true, 0, "radix_decode"}, Launch{false, 1, "paged_decode/1"},
        Launch{false, 3, "paged_decode/3"}, Launch{false, 0, "paged_decode/auto"}}) {
    const Result<T> whole = harness.run(1, l.radix, l.splits);
    test::expect_decode_matches(whole.out, whole.lse.data(), ref, ref_lse.data(), b.lens.data(),
                                {n, hq, D}, tol);
    for (int tp : {2, 4, 8}) {
      if (hq % tp != 0 || (m.num_kv_heads % tp != 0 && tp % m.num_kv_heads != 0)) continue;
      SCOPED_TRACE(::testing::Message() << l.name << " tp=" << tp);
      const Result<T> sharded = harness.run(tp, l.radix, l.splits);
      test::expect_decode_matches(sharded.out, sharded.lse.data(), ref, ref_lse.data(),
                                  b.lens.data(), {n, hq, D}, tol);
      bool bitwise = false;
      const double diff = relative_difference(sharded.out, whole.out, bitwise);
      const bool lse_bitwise =
          std::memcmp(sharded.lse.data(), whole.lse.data(), whole.lse.size() * sizeof(float)) == 0;
      const bool same_group = tp <= m.num_kv_heads;
      if (same_group && l.splits != 0) {
        EXPECT_TRUE(bitwise) << "rank outputs differ from the unsharded launch (rel " << diff
                             << ")";
        EXPECT_TRUE(lse_bitwise) << "rank LSEs differ from the unsharded launch";
      } else {
        EXPECT_LT(diff, tol) << "rank outputs differ from the unsharded launch";
        std::cout << "[ info ] " << DTypeTraits<T>::name << " Hq=" << hq
                  << " Hkv=" << m.num_kv_heads << " " << l.name << " tp=" << tp
                  << (same_group ? "" : " (replicated kv heads)")
                  << ": bitwise=" << (bitwise && lse_bitwise) << " rel diff=" << diff << "\n";
      }
    }
  }
}

void run(const Model& m, std::uint64_t seed) {
  test::with_dtype(m.dtype, [&](auto tag) { run_model<typename decltype(tag)::type>(m, seed); });
}

class TensorParallelTest : public test::GpuTest {};

TEST_F(TensorParallelTest, KvHeadsSplitEvenly) {
  // 32 q / 8 kv heads: TP 2, 4, 8 (8: one kv head per rank).
  run({DType::kBf16, 128, 32, 8, 16}, 1);
  run({DType::kHalf, 64, 16, 8, 1}, 2);
  run({DType::kFloat, 64, 8, 8, 3}, 3);
}

TEST_F(TensorParallelTest, ReplicatedKvHeads) {
  // 2 kv heads at TP 4 and 8 (2 and 4 replicas), MQA at every TP size.
  run({DType::kBf16, 128, 32, 2, 16}, 10);
  run({DType::kHalf, 128, 16, 2, 3}, 11);
  run({DType::kFloat, 64, 8, 2, 16}, 12);
  run({DType::kBf16, 64, 8, 1, 1}, 13);
}

TEST_F(TensorParallelTest, StridedCacheLayouts) {
  run({DType::kBf16, 128, 32, 8, 16, Layout::kHnd}, 20);
  run({DType::kHalf, 64, 16, 2, 3, Layout::kCombined}, 21);
  run({DType::kFloat, 128, 8, 4, 1, Layout::kPaddedNhd}, 22);
  run({DType::kBf16, 256, 16, 4, 16, Layout::kHnd}, 23);
}

// ---- host only (no GPU): the slot code the kernels address K/V with ---------------------------

/// Expects kv_slot_offset(kv_slot(block, offset), head) of the launchers' slot code to be the
/// element offset (from the view's k) of every row of `view`, a view of `pool` whose k starts
/// `k_first` elements into it; the rows are model rows of heads [head0, head0 + num_kv_heads).
template <class T>
void expect_slot_code_addresses(const PagedKvCacheView<T>& view, const test::PoolLayout& pool,
                                std::int64_t k_first, int heads, int head0) {
  const detail::KvSlotCode code = detail::kv_slot_code(view);
  for (int b = 0; b < view.num_blocks; ++b)
    for (int o = 0; o < view.block_size; ++o)
      for (int h = 0; h < view.num_kv_heads; ++h) {
        const std::int64_t want = test::pool_index(pool, view.block_size, heads, view.head_dim,
                                                   false, b, o, head0 + h, 0) -
                                  k_first;
        ASSERT_EQ(detail::kv_slot_offset(code, detail::kv_slot(code, b, o), h), want)
            << "block " << b << " offset " << o << " head " << h;
      }
}

template <class T>
void check_slot_codes() {
  for (Layout layout : {Layout::kNhd, Layout::kHnd, Layout::kCombined, Layout::kPaddedNhd}) {
    for (int bs : {1, 3, 16}) {
      for (int heads : {1, 3, 8}) {
        SCOPED_TRACE(::testing::Message() << DTypeTraits<T>::name << " " << test::name_of(layout)
                                          << " bs=" << bs << " heads=" << heads);
        const int blocks = 5, D = 64;
        const test::PoolLayout pool =
            test::make_pool_layout(layout, blocks, bs, heads, D, sizeof(T));
        std::vector<T> storage(static_cast<std::size_t>(pool.elements));
        PagedKvCacheView<T> full{
            storage.data() + pool.k_offset, storage.data() + pool.v_offset, blocks, bs, heads, D};
        full.block_stride = pool.block_stride;
        full.token_stride = pool.token_stride;
        full.head_stride = pool.head_stride;
        expect_slot_code_addresses(full, pool, pool.k_offset, heads, 0);
        // Every tensor-parallel slice of the kv heads, addressed from its own k.
        for (int first = 0; first < heads; ++first) {
          for (int count = 1; first + count <= heads; ++count) {
            const PagedKvCacheView<T> slice = slice_kv_heads(full, first, count);
            expect_slot_code_addresses(slice, pool, slice.k - storage.data(), heads, first);
            EXPECT_EQ(slice.v - slice.k, full.v - full.k);
          }
        }
      }
    }
  }
}

TEST(KvSlotCode, AddressesEveryLayoutAndHeadSlice) {
  check_slot_codes<__nv_bfloat16>();
  check_slot_codes<float>();
}

}  // namespace
}  // namespace radix_attention
