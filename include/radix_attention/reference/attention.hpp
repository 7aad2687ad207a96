#pragma once
/// @file
/// Float64 CPU reference of attention over a paged KV cache: the ground truth of the kernel
/// tests, and usable by anyone who wants to check a kernel's output on their own inputs.
/// Plain C++17; elements of any type convertible to float (float, double, and __half /
/// __nv_bfloat16 where their CUDA headers are included) or through a user conversion.
/// LSE is the natural log of the sum of exp(scale * q.k) over the range (not base 2).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <vector>

#include "radix_attention/core/error.hpp"

namespace radix_attention::reference {

/// @brief Geometry of a paged cache held in host memory: K and V each
/// [num_blocks, block_size, num_kv_heads, head_dim], row-major.
template <class T>
struct HostPagedCache {
  const T* k = nullptr;
  const T* v = nullptr;
  std::int64_t num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
};

/// @brief Default element conversion: through float (exact for __half and __nv_bfloat16).
struct ToDouble {
  template <class T>
  double operator()(const T& x) const {
    return static_cast<double>(static_cast<float>(x));
  }
};

/**
 * @brief Attention of one query row over tokens [begin, end) of one block-table row.
 *
 * out_row[d] = sum_t p_t * V[t][d] with p_t = exp(s_t - lse), s_t = scale * q . K[t], and
 * lse = log(sum_t exp(s_t)) (natural log). An empty range gives out_row = 0 and lse = -inf
 * (the partial-state convention of merge_states).
 *
 * @param q_row head_dim query elements.
 * @param cache host copy of the paged cache.
 * @param kv_head KV head to attend to, in [0, num_kv_heads).
 * @param table_row the sequence's block-table row (entries for tokens [begin, end) are read).
 * @param begin, end token range, 0 <= begin <= end.
 * @param scale softmax scale.
 * @param out_row head_dim doubles, written.
 * @param to_double element conversion (see ToDouble).
 * @return natural-log LSE of the range.
 * @throw InvalidArgument on a bad range, kv_head, or a block id outside [0, num_blocks).
 */
template <class T, class Q, class Convert = ToDouble>
double attend_range(const Q* q_row, const HostPagedCache<T>& cache, int kv_head,
                    const std::int32_t* table_row, std::int64_t begin, std::int64_t end,
                    double scale, double* out_row, Convert to_double = {}) {
  expects(begin >= 0 && begin <= end, "begin", begin, "must be in [0, end]");
  expects(kv_head >= 0 && kv_head < cache.num_kv_heads, "kv_head", kv_head,
          "must be in [0, num_kv_heads)");
  const int d_count = cache.head_dim;
  for (int d = 0; d < d_count; ++d) out_row[d] = 0.0;
  if (begin == end) return -std::numeric_limits<double>::infinity();

  auto row_of = [&](const T* base, std::int64_t t) {
    const std::int32_t block = table_row[t / cache.block_size];
    expects(block >= 0 && block < cache.num_blocks, "block id", block,
            "must be in [0, num_blocks)");
    const std::int64_t slot =
        static_cast<std::int64_t>(block) * cache.block_size + t % cache.block_size;
    return base + (slot * cache.num_kv_heads + kv_head) * d_count;
  };
  std::vector<double> q(static_cast<std::size_t>(d_count));
  for (int d = 0; d < d_count; ++d) q[d] = to_double(q_row[d]);
  std::vector<double> scores(static_cast<std::size_t>(end - begin));
  double max_score = -std::numeric_limits<double>::infinity();
  for (std::int64_t t = begin; t < end; ++t) {
    const T* k = row_of(cache.k, t);
    double dot = 0.0;
    for (int d = 0; d < d_count; ++d) dot += q[d] * to_double(k[d]);
    scores[t - begin] = dot * scale;
    max_score = std::max(max_score, scores[t - begin]);
  }
  double sum = 0.0;
  for (std::int64_t t = begin; t < end; ++t) {
    const double w = std::exp(scores[t - begin] - max_score);
    sum += w;
    const T* v = row_of(cache.v, t);
    for (int d = 0; d < d_count; ++d) out_row[d] += w * to_double(v[d]);
  }
  for (int d = 0; d < d_count; ++d) out_row[d] /= sum;
  return max_score + std::log(sum);
}

/**
 * @brief Whole-batch paged decode: for every sequence s and query head h,
 * out[s][h] = attend_range(q[s][h], kv head h / group, table row s, [0, context_lens[s])).
 *
 * @param q [num_seqs, num_q_heads, head_dim].
 * @param cache host copy of the cache.
 * @param block_tables [num_seqs, row_stride] int32.
 * @param row_stride entries between table rows.
 * @param context_lens [num_seqs] int32.
 * @param num_seqs sequences.
 * @param num_q_heads a multiple of cache.num_kv_heads.
 * @param scale softmax scale (pass 1 / sqrt(head_dim) for the usual one).
 * @param out [num_seqs, num_q_heads, head_dim] doubles, written.
 * @param lse [num_seqs, num_q_heads] doubles (natural log), written; may be nullptr.
 * @throw InvalidArgument on inconsistent shapes or out-of-range block ids.
 */
template <class T, class Q, class Convert = ToDouble>
void paged_decode(const Q* q, const HostPagedCache<T>& cache, const std::int32_t* block_tables,
                  std::int64_t row_stride, const std::int32_t* context_lens, int num_seqs,
                  int num_q_heads, double scale, double* out, double* lse, Convert to_double = {}) {
  expects(cache.num_kv_heads >= 1, "num_kv_heads", cache.num_kv_heads, "must be >= 1");
  expects_that(num_q_heads >= 1 && num_q_heads % cache.num_kv_heads == 0,
               "num_q_heads = ", num_q_heads,
               " must be a positive multiple of num_kv_heads = ", cache.num_kv_heads);
  const int group = num_q_heads / cache.num_kv_heads;
  const std::int64_t d_count = cache.head_dim;
  for (int s = 0; s < num_seqs; ++s) {
    for (int h = 0; h < num_q_heads; ++h) {
      const std::int64_t row = static_cast<std::int64_t>(s) * num_q_heads + h;
      const double l =
          attend_range(q + row * d_count, cache, h / group, block_tables + s * row_stride, 0,
                       context_lens[s], scale, out + row * d_count, to_double);
      if (lse != nullptr) lse[row] = l;
    }
  }
}

/**
 * @brief Whole-batch paged prefill / extend: request s owns query rows [qo_indptr[s],
 * qo_indptr[s + 1]) (q_len of them) and context_lens[s] = kv_len tokens; row i, head h attends
 * to tokens [0, kv_len - q_len + i + 1) when `causal` (clamped to [0, kv_len]), else [0, kv_len).
 *
 * @param q [qo_indptr[num_seqs], num_q_heads, head_dim].
 * @param out, lse like q / [rows, num_q_heads] (natural log; lse may be nullptr), written.
 * Other parameters as for paged_decode.
 * @throw InvalidArgument on inconsistent shapes, a decreasing qo_indptr or bad block ids.
 */
template <class T, class Q, class Convert = ToDouble>
void paged_prefill(const Q* q, const HostPagedCache<T>& cache, const std::int32_t* block_tables,
                   std::int64_t row_stride, const std::int32_t* context_lens,
                   const std::int32_t* qo_indptr, int num_seqs, int num_q_heads, double scale,
                   bool causal, double* out, double* lse, Convert to_double = {}) {
  expects(cache.num_kv_heads >= 1, "num_kv_heads", cache.num_kv_heads, "must be >= 1");
  expects_that(num_q_heads >= 1 && num_q_heads % cache.num_kv_heads == 0,
               "num_q_heads = ", num_q_heads,
               " must be a positive multiple of num_kv_heads = ", cache.num_kv_heads);
  const int group = num_q_heads / cache.num_kv_heads;
  const std::int64_t d_count = cache.head_dim;
  for (int s = 0; s < num_seqs; ++s) {
    const std::int64_t q_begin = qo_indptr[s];
    const std::int64_t q_len = qo_indptr[s + 1] - q_begin;
    expects(q_len >= 0, "qo_indptr[s + 1] - qo_indptr[s]", q_len, "must be >= 0");
    const std::int64_t kv_len = context_lens[s];
    for (std::int64_t i = 0; i < q_len; ++i) {
      const std::int64_t limit =
          causal ? std::clamp<std::int64_t>(kv_len - q_len + i + 1, 0, kv_len) : kv_len;
      for (int h = 0; h < num_q_heads; ++h) {
        const std::int64_t row = (q_begin + i) * num_q_heads + h;
        const double l =
            attend_range(q + row * d_count, cache, h / group, block_tables + s * row_stride, 0,
                         limit, scale, out + row * d_count, to_double);
        if (lse != nullptr) lse[row] = l;
      }
    }
  }
}

}  // namespace radix_attention::reference
