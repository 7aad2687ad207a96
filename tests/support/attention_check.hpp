#pragma once
// Shared by the decode GPU tests: the dtypes they sweep, random q/k/v, and the comparison of a
// decode launch's output (and LSE) against the float64 reference.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "support/device_buffer.hpp"

namespace radix_attention::test {

enum class DType { kFloat, kHalf, kBf16 };

template <class T>
struct TypeTag {
  using type = T;
};

/// Calls `f(TypeTag<T>{})` with the element type `dtype` names.
template <class F>
void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat:
      return f(TypeTag<float>{});
    case DType::kHalf:
      return f(TypeTag<__half>{});
    case DType::kBf16:
      return f(TypeTag<__nv_bfloat16>{});
  }
}

/// Host q, k and v of a decode test.
template <class T>
struct RandomQkv {
  std::vector<T> q, k, v;
};

/// q in [-3, 3) (scores O(1) after 1 / sqrt(D): peaked, not uniform, softmax rows), then k and v
/// in [-1, 1), drawn from `rng` in that order.
template <class T>
RandomQkv<T> random_qkv(std::size_t q_elems, std::size_t kv_elems, std::mt19937_64& rng) {
  RandomQkv<T> r;
  r.q = random_vector<T>(q_elems, rng, -3.f, 3.f);
  r.k = random_vector<T>(kv_elems, rng);
  r.v = random_vector<T>(kv_elems, rng);
  return r;
}

/// `rows` dense rows of `row_elems` elements copied `stride` apart (stride >= row_elems), the
/// elements between rows set to `pad` (a strided q or out buffer).
template <class T>
std::vector<T> with_row_pads(const std::vector<T>& dense, int rows, std::int64_t row_elems,
                             std::int64_t stride, T pad) {
  std::vector<T> out(static_cast<std::size_t>(rows) * stride, pad);
  for (int r = 0; r < rows; ++r)
    std::copy(dense.begin() + r * row_elems, dense.begin() + (r + 1) * row_elems,
              out.begin() + r * stride);
  return out;
}

/// The dense rows of a strided buffer (see with_row_pads); counts in `pads_written` the
/// elements between rows that are no longer NaN (an output pad poisoned with 0xFF bytes).
template <class T>
std::vector<T> dense_rows(const std::vector<T>& strided, int rows, std::int64_t row_elems,
                          std::int64_t stride, int& pads_written) {
  std::vector<T> out(static_cast<std::size_t>(rows) * row_elems);
  pads_written = 0;
  for (int r = 0; r < rows; ++r)
    for (std::int64_t e = 0; e < stride; ++e) {
      const T x = strided[r * stride + e];
      if (e < row_elems) {
        out[r * row_elems + e] = x;
      } else if (!std::isnan(static_cast<float>(x))) {
        ++pads_written;
      }
    }
  return out;
}

/// Rows and columns of a decode output: [num_seqs, num_q_heads, head_dim].
struct DecodeExtents {
  int num_seqs;
  int num_q_heads;
  int head_dim;
};

/**
 * Expects a decode output to match the float64 reference: every element finite; the rows of a
 * sequence with context 0 exactly zero with lse -inf; every other row within relative error
 * `tol` and its lse within `tol` x max(1, |ref lse|); the whole output within relative error
 * `tol`. `lse` (with `ref_lse`) may be null: then no LSE is checked. `per_element` also bounds
 * every element: |out - ref| <= 4 tol max(1, |ref|). Reports at most five failures.
 * @return the squared norm of `ref`, for a caller that compares another output against it.
 */
template <class T>
double expect_decode_matches(const std::vector<T>& out, const float* lse,
                             const std::vector<double>& ref, const double* ref_lse,
                             const std::int32_t* context_lens, DecodeExtents e, double tol,
                             bool per_element = false) {
  const int D = e.head_dim;
  int bad = 0;
  double err2 = 0.0, ref2 = 0.0;
  for (int s = 0; s < e.num_seqs; ++s) {
    for (int h = 0; h < e.num_q_heads; ++h) {
      const std::size_t row = static_cast<std::size_t>(s) * e.num_q_heads + h;
      double row_err2 = 0.0, row_ref2 = 0.0;
      for (int d = 0; d < D; ++d) {
        const double o = static_cast<float>(out[row * D + d]);
        const double r = ref[row * D + d];
        if (!std::isfinite(o) && bad++ < 5)
          ADD_FAILURE() << "non-finite out, sequence " << s << " head " << h << " d " << d;
        if (per_element && std::abs(o - r) > tol * std::max(1.0, std::abs(r)) * 4 && bad++ < 5) {
          ADD_FAILURE() << "sequence " << s << " head " << h << " d " << d << ": " << o << " vs "
                        << r;
        }
        row_err2 += (o - r) * (o - r);
        row_ref2 += r * r;
      }
      err2 += row_err2;
      ref2 += row_ref2;
      if (context_lens[s] == 0) {
        if (row_err2 != 0.0 && bad++ < 5)
          ADD_FAILURE() << "context 0 must give zeros, sequence " << s;
      } else if (std::sqrt(row_err2 / row_ref2) > tol && bad++ < 5) {
        ADD_FAILURE() << "sequence " << s << " head " << h << " row rel err "
                      << std::sqrt(row_err2 / row_ref2);
      }
      if (lse == nullptr) continue;
      if (context_lens[s] == 0) {
        if (!(std::isinf(lse[row]) && lse[row] < 0) && bad++ < 5)
          ADD_FAILURE() << "lse of empty sequence " << s << " = " << lse[row];
      } else if (!(std::abs(lse[row] - ref_lse[row]) <=
                   tol * std::max(1.0, std::abs(ref_lse[row]))) &&
                 bad++ < 5) {
        ADD_FAILURE() << "lse sequence " << s << " head " << h << ": " << lse[row] << " vs "
                      << ref_lse[row];
      }
    }
  }
  if (ref2 > 0) EXPECT_LT(std::sqrt(err2 / ref2), tol);
  return ref2;
}

}  // namespace radix_attention::test
