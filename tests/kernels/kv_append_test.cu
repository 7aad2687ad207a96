// kv_append against a byte-exact host model of the whole pool: every input/cache type pair
// (float, half, bf16 copies; fp8 e4m3 from each), NHD / HND / combined / padded layouts, block
// sizes 1..128, fused-QKV and strided inputs, packet and element paths, random slot orders,
// padding tokens, the pool's last slot; fp8 bits against an independent quantiser, the
// saturation / NaN rule and its counter; decode appends of several layers captured in a CUDA
// graph and replayed with new rows and slots. Argument checks run without a GPU.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "radix_attention/ops/kv_append.cuh"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/gpu.hpp"
#include "support/kv_cache_model.hpp"

namespace radix_attention {
namespace {

using test::DeviceBuffer;
using test::DType;
using test::Layout;
using test::Pool;

enum class Input { kDense, kFusedQkv, kStridedHeads, kMisaligned };

struct Case {
  DType in;
  bool fp8;
  int heads, head_dim, block_size, num_blocks, num_tokens;
  Layout layout = Layout::kNhd;
  Input input = Input::kDense;
  double padding = 0.2;  // fraction of padding tokens
  KvScaleMode mode = KvScaleMode::kPerTensor;
  bool null_scales = false;
};

/// Where the new rows live in one input buffer (element offsets) and their strides.
struct InputLayout {
  std::int64_t k_offset, v_offset, token_stride, head_stride, elements;
};

InputLayout make_input_layout(Input kind, int n, int heads, int D) {
  const std::int64_t row = std::int64_t(heads) * D;
  switch (kind) {
    case Input::kDense:
      return {0, n * row, 0, 0, 2 * n * row};
    case Input::kFusedQkv:  // [tokens, (Hq + 2 Hkv) D], Hq = 4 Hkv: K and V are slices
      return {4 * row, 5 * row, 6 * row, 0, n * 6 * row};
    case Input::kStridedHeads: {  // heads D + 8 apart, tokens one more 8 apart
      const std::int64_t hs = D + 8, ts = heads * hs + 8;
      return {0, n * ts, ts, hs, 2 * n * ts};
    }
    case Input::kMisaligned:  // one element off 16 bytes: the element path
      return {4 * row + 1, 5 * row + 1, 6 * row, 0, n * 6 * row + 2};
  }
  return {};
}

/// Distinct random slots (always the pool's last one), `padding` of the tokens negative.
std::vector<std::int32_t> random_slots(int n, std::int64_t num_slots, double padding,
                                       std::mt19937_64& rng) {
  std::vector<std::int32_t> all(num_slots);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<std::int32_t> slots(all.begin(), all.begin() + std::min<std::int64_t>(n, num_slots));
  if (!slots.empty() && std::find(slots.begin(), slots.end(), num_slots - 1) == slots.end()) {
    slots[rng() % slots.size()] = static_cast<std::int32_t>(num_slots - 1);
  }
  std::bernoulli_distribution pad(padding);
  const std::int32_t pads[] = {-1, -7, std::numeric_limits<std::int32_t>::min()};
  for (auto& s : slots) {
    if (pad(rng) && s != num_slots - 1) s = pads[rng() % 3];
  }
  return slots;
}

/// The cache element the model expects for input value x: a copy, or the reference e4m3 code
/// of x * (1 / scale) (the formula of core/kv_scales.hpp).
template <class TCache, class TIn>
TCache expected_element(TIn x, float scale) {
  if constexpr (std::is_same_v<TCache, TIn>) {
    return x;
  } else {
    TCache r;
    r.__x = test::reference_e4m3(DTypeTraits<TIn>::to_float(x) * (1.0f / scale));
    return r;
  }
}

/// Writes into the pool's host model what kv_append stores for `slots`: the rows of `in` laid
/// out as `il`, quantised with the per-head scales for an fp8 cache.
template <class TIn, class TCache>
void model_append(Pool<TCache>& pool, const std::vector<TIn>& in, const InputLayout& il,
                  const std::vector<std::int32_t>& slots, const std::vector<float>& k_scale,
                  const std::vector<float>& v_scale) {
  const std::int64_t ts = il.token_stride != 0 ? il.token_stride : pool.heads * pool.D;
  const std::int64_t hs = il.head_stride != 0 ? il.head_stride : pool.D;
  for (std::size_t t = 0; t < slots.size(); ++t) {
    if (slots[t] < 0) continue;
    const int block = slots[t] / pool.bs, offset = slots[t] % pool.bs;
    for (int is_v = 0; is_v < 2; ++is_v) {
      for (int h = 0; h < pool.heads; ++h) {
        const float scale = is_v ? v_scale[h] : k_scale[h];
        for (int e = 0; e < pool.D; ++e) {
          const TIn x = in[(is_v ? il.v_offset : il.k_offset) + std::int64_t(t) * ts + h * hs + e];
          pool.at(is_v, block, offset, h, e) = expected_element<TCache>(x, scale);
        }
      }
    }
  }
}

template <class TIn, class TCache>
void run_case(const Case& c, std::uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << DTypeTraits<TIn>::name << "->" << DTypeTraits<TCache>::name << " H=" << c.heads
               << " D=" << c.head_dim << " bs=" << c.block_size << " blocks=" << c.num_blocks
               << " tokens=" << c.num_tokens << " " << test::name_of(c.layout)
               << " input=" << int(c.input) << " mode=" << int(c.mode));
  std::mt19937_64 rng(seed);
  Pool<TCache> pool(c.layout, c.num_blocks, c.block_size, c.heads, c.head_dim, rng);
  const std::int64_t num_slots = std::int64_t(c.num_blocks) * c.block_size;
  const std::vector<std::int32_t> slots = random_slots(c.num_tokens, num_slots, c.padding, rng);
  const int n = static_cast<int>(slots.size());
  const InputLayout il = make_input_layout(c.input, n, c.heads, c.head_dim);
  const std::vector<TIn> in = test::random_vector<TIn>(il.elements, rng, -2.f, 2.f);
  DeviceBuffer<TIn> d_in(in);
  DeviceBuffer<std::int32_t> d_slots(slots);

  std::vector<float> k_scale(c.heads), v_scale(c.heads);
  std::uniform_real_distribution<float> scale_dist(0.004f, 0.05f);  // some |x| / s pass 448
  for (int h = 0; h < c.heads; ++h) k_scale[h] = scale_dist(rng), v_scale[h] = scale_dist(rng);
  if (c.mode == KvScaleMode::kPerTensor) std::fill(v_scale.begin(), v_scale.end(), v_scale[0]);
  if (c.mode == KvScaleMode::kPerTensor) std::fill(k_scale.begin(), k_scale.end(), k_scale[0]);
  if (c.null_scales) std::fill(k_scale.begin(), k_scale.end(), 1.f);
  if (c.null_scales) std::fill(v_scale.begin(), v_scale.end(), 1.f);
  DeviceBuffer<float> d_k_scale(k_scale), d_v_scale(v_scale);
  DeviceBuffer<int> d_nonfinite(std::vector<int>{0});

  KvAppendInput<TIn> input{d_in.data() + il.k_offset, d_in.data() + il.v_offset, n, il.token_stride,
                           il.head_stride};
  KvAppendOptions options;
  if constexpr (!std::is_same_v<TCache, TIn>) {
    if (!c.null_scales) options.scales = {d_k_scale.data(), d_v_scale.data(), c.mode};
    options.nonfinite_count = d_nonfinite.data();
  }
  kv_append(input, d_slots.data(), pool.view(), nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());

  model_append(pool, in, il, slots, k_scale, v_scale);
  test::expect_pool_matches(pool);
  EXPECT_EQ(d_nonfinite.download()[0], 0) << "random finite inputs counted as non-finite";
}

template <class F>
void with_pair(DType in, bool fp8, F&& f) {
  test::with_dtype(in, [&](auto tag) {
    using TIn = typename decltype(tag)::type;
    if (fp8) {
      f(test::TypeTag<TIn>{}, test::TypeTag<__nv_fp8_e4m3>{});
    } else {
      f(test::TypeTag<TIn>{}, test::TypeTag<TIn>{});
    }
  });
}

void run(const Case& c, std::uint64_t seed) {
  with_pair(c.in, c.fp8, [&](auto in, auto cache) {
    run_case<typename decltype(in)::type, typename decltype(cache)::type>(c, seed);
  });
}

class KvAppendGpu : public test::GpuTest {};

TEST_F(KvAppendGpu, EveryTypePairLayoutAndBlockSize) {
  const Layout layouts[] = {Layout::kNhd, Layout::kHnd, Layout::kCombined, Layout::kPaddedNhd,
                            Layout::kOddPaddedNhd};
  const Input inputs[] = {Input::kDense, Input::kFusedQkv, Input::kStridedHeads,
                          Input::kMisaligned};
  std::uint64_t seed = 1;
  for (DType in : {DType::kFloat, DType::kHalf, DType::kBf16}) {
    for (bool fp8 : {false, true}) {
      for (Layout layout : layouts) {
        for (int bs : {1, 3, 16, 128}) {
          Case c{in, fp8, 1 + int(seed % 4), seed % 2 ? 128 : 64, bs, 0, 0, layout};
          c.num_blocks = std::max(2, 600 / bs);
          c.num_tokens = std::min(200, c.num_blocks * bs);
          c.input = inputs[seed % 4];
          c.mode = seed % 3 == 0 ? KvScaleMode::kPerHead : KvScaleMode::kPerTensor;
          c.null_scales = seed % 5 == 0;
          run(c, seed++);
        }
      }
    }
  }
}

TEST_F(KvAppendGpu, OddShapesAndWholePool) {
  // D = 72: a bf16 packet (8) divides it, an fp8 packet (16) does not (element path); D = 8
  // with one head: rows of 2 packets, 8 token lanes per CTA; 32 x 256: rows longer than a CTA.
  for (bool fp8 : {false, true}) {
    run({DType::kBf16, fp8, 3, 72, 16, 20, 300}, 11);
    run({DType::kHalf, fp8, 1, 8, 3, 50, 150, Layout::kHnd}, 12);
    run({DType::kBf16, fp8, 32, 256, 16, 8, 128, Layout::kCombined, Input::kFusedQkv}, 13);
    // Every slot of the pool written, in a random order, no padding.
    run({DType::kFloat, fp8, 2, 64, 16, 12, 192, Layout::kNhd, Input::kDense, 0.0}, 14);
    // Only padding but the pool's last slot.
    run({DType::kHalf, fp8, 2, 64, 16, 12, 100, Layout::kNhd, Input::kDense, 1.0}, 15);
  }
}

TEST_F(KvAppendGpu, LargeAppendsUseSeveralTokensPerThread) {
  // >= 2^20 packets of the cache: 8192 tokens x 8 heads x 128 (packet path; 16-byte packets of
  // an fp8 cache hold 16 elements, so 4096 tokens suffice for 16/32-bit caches only) and 512
  // tokens on the element path (odd padding): the large instances (kTokens 4, 2 or 1).
  run({DType::kHalf, true, 8, 128, 16, 600, 8192, Layout::kHnd, Input::kStridedHeads, 0.1}, 23);
  run({DType::kFloat, true, 8, 128, 16, 600, 8192, Layout::kNhd, Input::kDense, 0.1}, 25);
  run({DType::kFloat, false, 8, 128, 16, 300, 4096, Layout::kCombined, Input::kDense, 0.1}, 24);
  for (bool fp8 : {false, true}) {
    run({DType::kBf16, fp8, 8, 128, 16, 600, 8192, Layout::kNhd, Input::kFusedQkv, 0.1}, 21);
    run({DType::kBf16, fp8, 8, 128, 16, 40, 512, Layout::kOddPaddedNhd, Input::kDense, 0.1}, 22);
  }
}

TEST_F(KvAppendGpu, Fp8SaturatesInfKeepsNanAndCountsBoth) {
  using TIn = float;
  const int heads = 1, D = 16, bs = 4;
  std::mt19937_64 rng(31);
  Pool<__nv_fp8_e4m3> pool(Layout::kNhd, 2, bs, heads, D, rng);
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // K row: specials; V row: exact ties and values around the saturation point.
  std::vector<TIn> k = {inf,   -inf,  nan,    -nan,   1e30f,   -1e30f, 448.f, 449.f,
                        464.f, 500.f, -460.f, 1e-10f, -1e-10f, 0.f,    -0.f,  3.f};
  std::vector<TIn> v = {1.0625f, 1.1875f,      0.0029296875f, 17.f,     18.f,  240.f,  232.f,
                        0.5f,    0.001953125f, 0.0009765625f, -1.0625f, 2.25f, 2.125f, 6.5f,
                        7.f,     1.f};
  std::vector<TIn> in(k);
  in.insert(in.end(), v.begin(), v.end());
  DeviceBuffer<TIn> d_in(in);
  DeviceBuffer<std::int32_t> d_slot(std::vector<std::int32_t>{5});
  DeviceBuffer<int> d_count(std::vector<int>{3});  // accumulates: never reset by kv_append
  KvAppendOptions options;
  options.nonfinite_count = d_count.data();
  kv_append(KvAppendInput<TIn>{d_in.data(), d_in.data() + D, 1}, d_slot.data(), pool.view(),
            nullptr, options);
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_EQ(d_count.download()[0], 3 + 4);  // +-Inf and two NaNs
  for (int e = 0; e < D; ++e) {
    pool.at(false, 1, 1, 0, e).__x = test::reference_e4m3(k[e]);
    pool.at(true, 1, 1, 0, e).__x = test::reference_e4m3(v[e]);
  }
  EXPECT_EQ(pool.at(false, 1, 1, 0, 0).__x, 0x7E);  // +Inf -> +448
  EXPECT_EQ(pool.at(false, 1, 1, 0, 1).__x, 0xFE);  // -Inf -> -448
  test::expect_pool_matches(pool);
  const std::vector<__nv_fp8_e4m3> got = pool.device.download();
  EXPECT_EQ(got[test::pool_index(pool.layout, bs, heads, D, false, 1, 1, 0, 2)].__x & 0x7F, 0x7F)
      << "NaN input must stay NaN";
}

/// One decode append per layer, captured into one CUDA graph (global capture mode: a
/// synchronisation or an allocation in kv_append's launch path would fail the capture).
class CapturedAppends {
 public:
  template <class Record>
  explicit CapturedAppends(Record&& record) {
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeGlobal));
    try {
      record(stream_);
    } catch (...) {
      cudaGraph_t aborted = nullptr;
      (void)cudaStreamEndCapture(stream_, &aborted);
      if (aborted != nullptr) (void)cudaGraphDestroy(aborted);
      (void)cudaStreamDestroy(stream_);
      throw;
    }
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph_));
    RADIX_ATTENTION_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  CapturedAppends(const CapturedAppends&) = delete;
  CapturedAppends& operator=(const CapturedAppends&) = delete;
  ~CapturedAppends() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
    (void)cudaStreamDestroy(stream_);
  }
  void replay() {
    RADIX_ATTENTION_CUDA_CHECK(cudaGraphLaunch(exec_, stream_));
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  cudaStream_t stream_ = nullptr;
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// A decode step of kLayers layers as an engine runs it: each layer's kv_append (its own pool,
/// input rows and slot mapping; 8 heads x 128, block 16, 256 tokens with padding) captured
/// once, then replayed for several steps whose new rows and slots are uploaded into the same
/// device buffers between replays. Every replay must write that step's rows at that step's
/// slots: the graph holds pointers, never the values of the step it was captured in.
template <class TIn, class TCache>
void run_graph_case(std::uint64_t seed) {
  constexpr int kLayers = 3, kHeads = 8, kD = 128, kBs = 16, kBlocks = 40, kTokens = 256;
  SCOPED_TRACE(::testing::Message() << DTypeTraits<TIn>::name << "->" << DTypeTraits<TCache>::name);
  std::mt19937_64 rng(seed);
  const InputLayout il = make_input_layout(Input::kDense, kTokens, kHeads, kD);
  std::vector<Pool<TCache>> pools;
  std::vector<DeviceBuffer<TIn>> d_in;
  std::vector<DeviceBuffer<std::int32_t>> d_slots;
  for (int l = 0; l < kLayers; ++l) {
    pools.emplace_back(Layout::kNhd, kBlocks, kBs, kHeads, kD, rng);
    d_in.emplace_back(static_cast<std::size_t>(il.elements));
    d_slots.emplace_back(static_cast<std::size_t>(kTokens));
  }
  std::vector<float> k_scale(kHeads, 1.f), v_scale(kHeads, 1.f);
  std::uniform_real_distribution<float> scale_dist(0.004f, 0.05f);
  if constexpr (!std::is_same_v<TCache, TIn>) {
    for (int h = 0; h < kHeads; ++h) k_scale[h] = scale_dist(rng), v_scale[h] = scale_dist(rng);
  }
  DeviceBuffer<float> d_k_scale(k_scale), d_v_scale(v_scale);
  KvAppendOptions options;
  if constexpr (!std::is_same_v<TCache, TIn>) {
    options.scales = {d_k_scale.data(), d_v_scale.data(), KvScaleMode::kPerHead};
  }

  CapturedAppends graph([&](cudaStream_t stream) {
    for (int l = 0; l < kLayers; ++l) {
      const KvAppendInput<TIn> input{d_in[l].data() + il.k_offset, d_in[l].data() + il.v_offset,
                                     kTokens};
      kv_append(input, d_slots[l].data(), pools[l].view(), stream, options);
    }
  });
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(::testing::Message() << "replay " << step);
    std::vector<std::vector<TIn>> in(kLayers);
    std::vector<std::vector<std::int32_t>> slots(kLayers);
    for (int l = 0; l < kLayers; ++l) {
      in[l] = test::random_vector<TIn>(il.elements, rng, -2.f, 2.f);
      slots[l] = random_slots(kTokens, std::int64_t(kBlocks) * kBs, 0.1, rng);
      d_in[l].upload(in[l]);
      d_slots[l].upload(slots[l]);
    }
    graph.replay();
    for (int l = 0; l < kLayers; ++l) {
      model_append(pools[l], in[l], il, slots[l], k_scale, v_scale);
      test::expect_pool_matches(pools[l]);
    }
    if (::testing::Test::HasFailure()) return;
  }
}

TEST_F(KvAppendGpu, DecodeAppendsReplayFromACudaGraph) {
  run_graph_case<__nv_bfloat16, __nv_bfloat16>(41);
  run_graph_case<__nv_bfloat16, __nv_fp8_e4m3>(42);
  run_graph_case<__half, __half>(43);
}

// ---- the host quantiser model, and argument checks: no GPU needed ----

TEST(KvAppendFp8Model, ReferenceQuantiserMatchesCudaHostConversion) {
  // Every bf16 bit pattern (all exponents, both signs, Inf, NaN) and random floats.
  std::vector<float> xs;
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const std::uint32_t bits = b << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    xs.push_back(f);
  }
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<float> d(-500.f, 500.f);
  for (int i = 0; i < 100000; ++i) xs.push_back(d(rng));
  int bad = 0;
  for (float x : xs) {
    const unsigned char want = test::reference_e4m3(x), got = quantize_e4m3(x, 1.f);
    const bool both_nan = (want & 0x7F) == 0x7F && (got & 0x7F) == 0x7F;
    if (want != got && !both_nan && bad++ < 5) {
      ADD_FAILURE() << "x = " << x << ": reference " << int(want) << ", cuda " << int(got);
    }
  }
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(quantize_e4m3(1000.f, 0.5f), 0x7E);  // 1000 * 0.5 = 500 saturates
  EXPECT_EQ(e4m3_to_float(0x7E), 448.f);
}

}  // namespace
}  // namespace radix_attention
