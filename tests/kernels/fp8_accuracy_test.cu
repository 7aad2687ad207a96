// The fp8 e4m3 format's own error, reported (with loose sanity bounds): decode attention over
// the fp8 cache (dequantised) against attention over the unquantised cache, both in float64 on
// the host, on random data and on a 131072-token context; where a GPU is present, also the
// kernel's output over the fp8 cache against both references (the long context included, as
// fp32 accumulation must keep it within the 16-bit tolerance of the dequantised reference).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "radix_attention/ops/paged_decode.cuh"
#include "radix_attention/reference/attention.hpp"
#include "support/device_buffer.hpp"
#include "support/fp8_kv.hpp"
#include "support/gpu.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using E = __nv_fp8_e4m3;

/// Relative L2 error of `x` against `ref`, and the largest |x - ref|.
struct Error {
  double rel_l2 = 0.0;
  double max_abs = 0.0;
};

template <class X>
Error error_of(const std::vector<X>& x, const std::vector<double>& ref) {
  double err2 = 0.0, ref2 = 0.0, max_abs = 0.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(static_cast<float>(x[i])) - ref[i];
    err2 += d * d;
    ref2 += ref[i] * ref[i];
    max_abs = std::max(max_abs, std::abs(d));
  }
  return {ref2 > 0 ? std::sqrt(err2 / ref2) : 0.0, max_abs};
}

struct Report {
  const char* name;
  int num_seqs;
  int context;
  int num_q_heads;
  int num_kv_heads;
  KvScaleMode mode;
};

void report(const Report& r, std::uint64_t seed) {
  constexpr int D = 128, bs = 16;
  std::mt19937_64 rng(seed);
  const int blocks_per_seq = (r.context + bs - 1) / bs;
  const int num_blocks = r.num_seqs * blocks_per_seq;
  std::vector<std::int32_t> tables(num_blocks), lens(r.num_seqs, r.context);
  for (int b = 0; b < num_blocks; ++b) tables[b] = num_blocks - 1 - b;  // reversed placement
  const std::size_t slots = static_cast<std::size_t>(num_blocks) * bs;
  const test::Fp8Tensor k = test::random_fp8_tensor(slots, r.num_kv_heads, D, r.mode, rng);
  const test::Fp8Tensor v = test::random_fp8_tensor(slots, r.num_kv_heads, D, r.mode, rng);
  const std::size_t q_elems = static_cast<std::size_t>(r.num_seqs) * r.num_q_heads * D;
  const std::vector<__nv_bfloat16> q = test::random_vector<__nv_bfloat16>(q_elems, rng, -3.f, 3.f);

  const double scale = 1.0 / std::sqrt(double(D));
  std::vector<double> ref_raw(q_elems), ref_fp8(q_elems);
  std::vector<double> lse_raw(q_elems / D), lse_fp8(q_elems / D);
  const reference::HostPagedCache<float> raw{k.raw.data(), v.raw.data(),   num_blocks,
                                             bs,           r.num_kv_heads, D};
  const reference::HostPagedCache<float> deq{
      k.dequant.data(), v.dequant.data(), num_blocks, bs, r.num_kv_heads, D};
  reference::paged_decode(q.data(), raw, tables.data(), blocks_per_seq, lens.data(), r.num_seqs,
                          r.num_q_heads, scale, ref_raw.data(), lse_raw.data());
  reference::paged_decode(q.data(), deq, tables.data(), blocks_per_seq, lens.data(), r.num_seqs,
                          r.num_q_heads, scale, ref_fp8.data(), lse_fp8.data());
  const Error format = error_of(ref_fp8, ref_raw);
  double lse_diff = 0.0;
  for (std::size_t i = 0; i < lse_raw.size(); ++i) {
    lse_diff = std::max(lse_diff, std::abs(lse_raw[i] - lse_fp8[i]));
  }
  std::printf(
      "[fp8 accuracy] %s: %d x %d tokens, %d/%d heads, %s scales: format error rel L2 "
      "%.3e, max |diff| %.3e, max |lse diff| %.3e\n",
      r.name, r.num_seqs, r.context, r.num_q_heads, r.num_kv_heads,
      r.mode == KvScaleMode::kPerHead ? "per-head" : "per-tensor", format.rel_l2, format.max_abs,
      lse_diff);
  // e4m3 keeps 3 mantissa bits (relative spacing 1/8 .. 1/16): a few per cent, never more.
  EXPECT_LT(format.rel_l2, 0.15);
  EXPECT_LT(lse_diff, 0.5);
  if (!test::gpu_available()) return;

  DeviceBuffer<__nv_bfloat16> d_q(q), d_out(q_elems);
  DeviceBuffer<E> d_k(k.codes), d_v(v.codes);
  DeviceBuffer<float> d_ks(k.scales), d_vs(v.scales);
  DeviceBuffer<std::int32_t> d_tables(tables), d_lens(lens);
  d_out.poison();
  const PagedKvCacheView<E> cache{d_k.data(), d_v.data(), num_blocks, bs, r.num_kv_heads, D};
  const BlockTableView view{d_tables.data(), d_lens.data(),  r.num_seqs,
                            blocks_per_seq,  blocks_per_seq, r.context};
  PagedDecodeOptions options;
  options.kv_scales = {d_ks.data(), d_vs.data(), r.mode};
  const std::size_t ws = paged_decode_workspace_bytes(r.num_q_heads, cache, view, options);
  DeviceBuffer<unsigned char> workspace(ws);
  paged_decode(d_q.data(), r.num_q_heads, cache, view, d_out.data(), nullptr, workspace.data(), ws,
               nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<__nv_bfloat16> out = d_out.download();
  const Error kernel = error_of(out, ref_fp8);
  const Error total = error_of(out, ref_raw);
  std::printf(
      "[fp8 accuracy] %s: kernel vs dequantised reference rel L2 %.3e (max %.3e); "
      "kernel vs unquantised reference rel L2 %.3e (max %.3e)\n",
      r.name, kernel.rel_l2, kernel.max_abs, total.rel_l2, total.max_abs);
  EXPECT_LT(kernel.rel_l2, 1e-2);
  EXPECT_LT(total.rel_l2, 0.15);
}

TEST(Fp8Accuracy, RandomData) {
  report({"random", 16, 1000, 32, 8, KvScaleMode::kPerHead}, 1);
  report({"random", 16, 1000, 32, 8, KvScaleMode::kPerTensor}, 2);
}

TEST(Fp8Accuracy, Context131072) {
  report({"long context", 1, 131072, 8, 1, KvScaleMode::kPerHead}, 3);
}

}  // namespace
}  // namespace radix_attention
