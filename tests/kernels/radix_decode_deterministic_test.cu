// Batch-invariant radix decode (PlannerOptions::deterministic): a request's output is bitwise
// the same alone, in a batch of 64, with its prefix shared or not, and wherever it sits in the
// batch; every dtype, block sizes 1 and 16, GQA groups 4 and 7, prefixes on and off the
// 512-token chunk grid. The outputs are also checked against the float64 reference.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <type_traits>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/ops/radix_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;

struct Shape {
  int num_q_heads, num_kv_heads, head_dim;
};

// A batch over one cache: every request is (shared prefix blocks + its own blocks).
struct Requests {
  int block_size = 16;
  std::vector<std::vector<std::int32_t>> rows;  // block ids
  std::vector<std::int32_t> lens;
};

template <class T>
class InvariantRunner {
 public:
  InvariantRunner(const Shape& s, int pool_blocks, int block_size, std::mt19937_64& rng)
      : s_(s), pool_(pool_blocks), bs_(block_size) {
    const std::size_t kv = static_cast<std::size_t>(pool_) * bs_ * s.num_kv_heads * s.head_dim;
    qkv_ = test::random_qkv<T>(0, kv, rng);
    k_ = DeviceBuffer<T>(qkv_.k);
    v_ = DeviceBuffer<T>(qkv_.v);
  }

  // Decodes `order` (indices into reqs) with queries q_all[order[i]]; returns [n, Hq, D].
  std::vector<T> decode(const Requests& reqs, const std::vector<T>& q_all,
                        const std::vector<int>& order, bool sharing, int* shared_segments) {
    const int n = static_cast<int>(order.size());
    const int row_elems = s_.num_q_heads * s_.head_dim;
    int width = 1;
    for (int i : order) width = std::max(width, static_cast<int>(reqs.rows[i].size()));
    std::vector<std::int32_t> table(static_cast<std::size_t>(n) * width, 0), lens(n);
    std::vector<T> q(static_cast<std::size_t>(n) * row_elems);
    for (int i = 0; i < n; ++i) {
      const auto& r = reqs.rows[order[i]];
      std::copy(r.begin(), r.end(), table.begin() + static_cast<std::ptrdiff_t>(i) * width);
      lens[i] = reqs.lens[order[i]];
      std::copy_n(q_all.begin() + static_cast<std::ptrdiff_t>(order[i]) * row_elems, row_elems,
                  q.begin() + static_cast<std::ptrdiff_t>(i) * row_elems);
    }
    const BlockTableView host{table.data(), lens.data(), n, width, width, -1};
    PlannerOptions tuning;
    tuning.deterministic = true;
    tuning.enable_sharing = sharing;
    tuning.merge_launch_bytes = 0;  // share whenever it saves bytes
    const ModelShape model{s_.num_q_heads, s_.num_kv_heads, s_.head_dim,
                           static_cast<std::int32_t>(sizeof(T))};
    PlanStats stats;
    const RadixPlan plan = radix_attention::plan(
        host, bs_, planner_options(model, radix_decode_device_shape<T>(s_.head_dim), tuning),
        &stats);
    if (shared_segments != nullptr) *shared_segments = stats.num_shared_segments;

    DeviceBuffer<T> d_q(q), d_out(q.size());
    DeviceBuffer<std::int32_t> d_table(table), d_lens(lens);
    d_out.poison();
    DeviceRadixPlan device_plan;
    device_plan.upload(plan, lens, s_.num_q_heads / s_.num_kv_heads, nullptr);
    const std::size_t ws = radix_decode_workspace_bytes(device_plan, s_.num_q_heads, s_.head_dim);
    DeviceBuffer<unsigned char> work(std::max<std::size_t>(ws, 16));
    const PagedKvCacheView<T> cache{k_.data(), v_.data(), pool_, bs_, s_.num_kv_heads, s_.head_dim};
    const BlockTableView view{d_table.data(), d_lens.data(), n, width, width, -1};
    radix_decode(d_q.data(), s_.num_q_heads, cache, view, device_plan, d_out.data(), nullptr,
                 work.data(), ws, nullptr);
    RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
    last_table_ = table;
    last_lens_ = lens;
    last_q_ = q;
    last_width_ = width;
    return d_out.download();
  }

  // The float64 reference of the last decode, checked against `out`.
  void expect_matches_reference(const std::vector<T>& out) const {
    const int n = static_cast<int>(last_lens_.size());
    std::vector<double> ref(out.size());
    reference::HostPagedCache<T> host{qkv_.k.data(), qkv_.v.data(),   pool_,
                                      bs_,           s_.num_kv_heads, s_.head_dim};
    reference::paged_decode(last_q_.data(), host, last_table_.data(), last_width_,
                            last_lens_.data(), n, s_.num_q_heads,
                            1.0 / std::sqrt(double(s_.head_dim)), ref.data(), nullptr);
    test::expect_decode_matches(out, nullptr, ref, nullptr, last_lens_.data(),
                                {n, s_.num_q_heads, s_.head_dim},
                                std::is_same_v<T, float> ? 1e-5 : 1e-2);
  }

 private:
  Shape s_;
  int pool_, bs_;
  test::RandomQkv<T> qkv_;
  DeviceBuffer<T> k_, v_;
  std::vector<std::int32_t> last_table_, last_lens_;
  std::vector<T> last_q_;
  int last_width_ = 1;
};

// Row i of a [n, Hq, D] output equals row j of another, bit for bit.
template <class T>
bool same_row_bits(const std::vector<T>& a, int i, const std::vector<T>& b, int j, int row_elems) {
  return std::memcmp(a.data() + static_cast<std::ptrdiff_t>(i) * row_elems,
                     b.data() + static_cast<std::ptrdiff_t>(j) * row_elems,
                     sizeof(T) * static_cast<std::size_t>(row_elems)) == 0;
}

template <class T>
void run_invariance(const Shape& s, int bs, int prefix_tokens, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "dtype bytes " << sizeof(T) << " block " << bs << " prefix " << prefix_tokens
               << " heads " << s.num_q_heads << "/" << s.num_kv_heads << " D " << s.head_dim);
  std::mt19937_64 rng(seed);
  const int n = 64;
  const int prefix_blocks = prefix_tokens / bs;  // full blocks: what requests can share
  Requests reqs;
  reqs.block_size = bs;
  int next_block = prefix_blocks;
  for (int i = 0; i < n; ++i) {
    // Request 0 has no context at all; the rest the prefix plus 0..299 tokens of their own.
    const int own = i == 0 ? 0 : static_cast<int>(rng() % 300);
    const int len = i == 0 ? 0 : prefix_blocks * bs + own;
    std::vector<std::int32_t> row;
    if (i != 0) {
      for (int b = 0; b < prefix_blocks; ++b) row.push_back(b);
    }
    const int own_blocks = (len + bs - 1) / bs - static_cast<int>(row.size());
    for (int b = 0; b < own_blocks; ++b) row.push_back(next_block++);
    reqs.rows.push_back(row);
    reqs.lens.push_back(len);
  }
  InvariantRunner<T> runner(s, next_block, bs, rng);
  const int row_elems = s.num_q_heads * s.head_dim;
  const std::vector<T> q_all =
      test::random_qkv<T>(static_cast<std::size_t>(n) * row_elems, 0, rng).q;

  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  int shared = 0;
  const std::vector<T> batch = runner.decode(reqs, q_all, order, true, &shared);
  runner.expect_matches_reference(batch);
  if (prefix_tokens >= 512) EXPECT_GT(shared, 0) << "the batch shares its prefix";
  const std::vector<T> unshared = runner.decode(reqs, q_all, order, false, nullptr);
  std::vector<int> shuffled = order;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  const std::vector<T> moved = runner.decode(reqs, q_all, shuffled, true, nullptr);
  std::vector<int> position(n);
  for (int i = 0; i < n; ++i) position[shuffled[i]] = i;
  const std::vector<int> half(order.begin(), order.begin() + n / 2);
  const std::vector<T> smaller = runner.decode(reqs, q_all, half, true, nullptr);

  int mismatches = 0;
  for (int i = 0; i < n && mismatches < 5; ++i) {
    const std::vector<T> alone = runner.decode(reqs, q_all, {i}, true, nullptr);
    const bool ok = same_row_bits(batch, i, alone, 0, row_elems) &&
                    same_row_bits(batch, i, unshared, i, row_elems) &&
                    same_row_bits(batch, i, moved, position[i], row_elems) &&
                    (i >= n / 2 || same_row_bits(batch, i, smaller, i, row_elems));
    if (!ok) {
      ++mismatches;
      ADD_FAILURE() << "request " << i << " (context " << reqs.lens[i]
                    << "): output bits differ between batches "
                    << "(alone / unshared / moved / half: "
                    << same_row_bits(batch, i, alone, 0, row_elems) << " "
                    << same_row_bits(batch, i, unshared, i, row_elems) << " "
                    << same_row_bits(batch, i, moved, position[i], row_elems) << " "
                    << (i >= n / 2 || same_row_bits(batch, i, smaller, i, row_elems)) << ")";
    }
  }
}

class RadixDecodeDeterministicTest : public test::GpuTest {};

TEST_F(RadixDecodeDeterministicTest, Bf16SharedPrefixOnAndOffTheChunkGrid) {
  run_invariance<__nv_bfloat16>({32, 8, 128}, 16, 2048, 1);
  run_invariance<__nv_bfloat16>({32, 8, 128}, 16, 1000, 2);
  run_invariance<__nv_bfloat16>({28, 4, 128}, 1, 777, 3);
}

TEST_F(RadixDecodeDeterministicTest, HalfAndFloat) {
  run_invariance<__half>({32, 8, 64}, 16, 1536, 4);
  run_invariance<float>({8, 2, 64}, 16, 600, 5);
}

}  // namespace
}  // namespace radix_attention
