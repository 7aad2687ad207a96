#pragma once
// Shared by the AttentionBatch GPU tests: a prefix-cached engine (allocator, radix tree,
// sequence manager) over a random K/V pool on the GPU, a stream, and the checks of a decode or
// prefill step's output (and LSE) against the float64 reference, padding rows included.

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <type_traits>
#include <vector>

#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/core/cuda_check.cuh"
#include "radix_attention/core/views.hpp"
#include "radix_attention/reference/attention.hpp"
#include "support/attention_check.hpp"
#include "support/device_buffer.hpp"
#include "support/random_tokens.hpp"

namespace radix_attention::test {

struct HeadShape {
  int num_q_heads, num_kv_heads, head_dim;
};

/// A non-blocking stream (capturable: not the legacy default stream), destroyed at scope end.
struct Stream {
  cudaStream_t stream = nullptr;
  Stream() {
    RADIX_ATTENTION_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { (void)cudaStreamDestroy(stream); }
};

/// A paged K/V pool of random values (host copy + device copy) and the host side of an engine
/// over it. Every block holds random data, so any block a table names reads defined values.
template <class T>
struct Engine {
  int block_size;
  HeadShape heads;
  int num_blocks;
  BlockAllocator allocator;
  RadixTree tree;
  SequenceManager manager;
  std::vector<T> k, v;
  DeviceBuffer<T> d_k, d_v;

  Engine(int bs, HeadShape h, int blocks, std::mt19937_64& rng)
      : block_size(bs),
        heads(h),
        num_blocks(blocks),
        allocator(blocks),
        tree(allocator, bs),
        manager(allocator, tree) {
    const std::size_t elems = static_cast<std::size_t>(blocks) * bs * h.num_kv_heads * h.head_dim;
    k = random_vector<T>(elems, rng);
    v = random_vector<T>(elems, rng);
    d_k = DeviceBuffer<T>(k);
    d_v = DeviceBuffer<T>(v);
  }

  PagedKvCacheView<T> cache() const {
    return {d_k.data(), d_v.data(), num_blocks, block_size, heads.num_kv_heads, heads.head_dim};
  }
  reference::HostPagedCache<T> host() const {
    return {k.data(), v.data(), num_blocks, block_size, heads.num_kv_heads, heads.head_dim};
  }
  std::size_t row_elems() const {
    return static_cast<std::size_t>(heads.num_q_heads) * heads.head_dim;
  }

  /// Caches a random prompt of `prompt_len` tokens and adds `count` requests, each the prompt
  /// plus 1..max_extra random tokens of its own.
  std::vector<SequenceId> share_prompt(std::mt19937_64& rng, int prompt_len, int count,
                                       int max_extra) {
    const std::vector<TokenId> prompt = random_tokens(rng, prompt_len);
    manager.finish(manager.add(prompt));
    std::vector<SequenceId> seqs;
    for (int i = 0; i < count; ++i) seqs.push_back(join(rng, prompt, max_extra));
    return seqs;
  }
  SequenceId join(std::mt19937_64& rng, std::vector<TokenId> prompt, int max_extra) {
    const std::vector<TokenId> own =
        random_tokens(rng, 1 + static_cast<int>(rng() % static_cast<unsigned>(max_extra)));
    prompt.insert(prompt.end(), own.begin(), own.end());
    return manager.add(prompt);
  }
};

template <class T>
double tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-2;
}

/// Device output + LSE of a step, poisoned (NaN) before each launch.
template <class T>
struct StepOutput {
  DeviceBuffer<T> out;
  DeviceBuffer<float> lse;
  StepOutput(std::size_t rows, std::size_t row_elems, int num_q_heads)
      : out(rows * row_elems), lse(rows * static_cast<std::size_t>(num_q_heads)) {}
  void poison(cudaStream_t stream) {
    RADIX_ATTENTION_CUDA_CHECK(cudaMemsetAsync(out.data(), 0xFF, out.bytes(), stream));
    RADIX_ATTENTION_CUDA_CHECK(cudaMemsetAsync(lse.data(), 0xFF, lse.bytes(), stream));
  }
};

/// Expects rows [0, rows) of a decode step's output to match the reference for `tables` (the
/// batch's rows; rows past them are padding: context 0, output 0, lse -inf).
template <class T>
void expect_decode_step(const Engine<T>& e, const BlockTables& tables, int rows,
                        const std::vector<T>& q, const StepOutput<T>& got) {
  const int H = e.heads.num_q_heads, D = e.heads.head_dim;
  const std::int64_t stride = std::max(tables.max_blocks_per_seq, 1);
  std::vector<std::int32_t> lens = tables.context_lens;
  lens.resize(static_cast<std::size_t>(rows), 0);
  std::vector<std::int32_t> table = tables.block_tables;
  table.resize(static_cast<std::size_t>(rows * stride), kBlockTablePadding);
  std::vector<double> ref(static_cast<std::size_t>(rows) * e.row_elems());
  std::vector<double> ref_lse(static_cast<std::size_t>(rows) * H);
  reference::paged_decode(q.data(), e.host(), table.data(), stride, lens.data(), rows, H,
                          1.0 / std::sqrt(double(D)), ref.data(), ref_lse.data());
  std::vector<T> out = got.out.download();
  std::vector<float> lse = got.lse.download();
  out.resize(ref.size());
  lse.resize(ref_lse.size());
  expect_decode_matches(out, lse.data(), ref, ref_lse.data(), lens.data(), {rows, H, D},
                        tolerance<T>());
}

/// Expects the total_q rows of a prefill step (causal, rows packed in batch order) to match
/// the reference.
template <class T>
void expect_prefill_step(const Engine<T>& e, const BlockTables& tables,
                         const std::vector<std::int32_t>& q_lens, const std::vector<T>& q,
                         const StepOutput<T>& got) {
  const int H = e.heads.num_q_heads, D = e.heads.head_dim;
  std::vector<std::int32_t> indptr{0};
  for (std::int32_t n : q_lens) indptr.push_back(indptr.back() + n);
  const int total = indptr.back();
  std::vector<double> ref(static_cast<std::size_t>(total) * e.row_elems());
  std::vector<double> ref_lse(static_cast<std::size_t>(total) * H);
  reference::paged_prefill(q.data(), e.host(), tables.block_tables.data(),
                           std::max(tables.max_blocks_per_seq, 1), tables.context_lens.data(),
                           indptr.data(), tables.num_seqs, H, 1.0 / std::sqrt(double(D)),
                           /*causal=*/true, ref.data(), ref_lse.data());
  std::vector<T> out = got.out.download();
  std::vector<float> lse = got.lse.download();
  out.resize(ref.size());
  lse.resize(ref_lse.size());
  // Every query row sees at least its own key (q_len <= context): no row is empty.
  const std::vector<std::int32_t> nonempty(static_cast<std::size_t>(total), 1);
  expect_decode_matches(out, lse.data(), ref, ref_lse.data(), nonempty.data(), {total, H, D},
                        tolerance<T>());
}

}  // namespace radix_attention::test
