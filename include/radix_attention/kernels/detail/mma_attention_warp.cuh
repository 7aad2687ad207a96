#pragma once
/// @file
/// Warp-level mainloop pieces of the attention tile engine on `mma.sync` tensor cores (sm_80+):
/// one warp owns 16 query rows and a range of a K/V tile's tokens in shared memory.
///   warp_qk:        S = Q K^T      (m16n8k16, float accumulators)
///   WarpSoftmax:    online softmax in base 2 over the S fragments, running (max, sum) per row
///   warp_pv:        O += P V       (the S accumulators re-packed as A fragments of P)
/// Shared tiles are [rows][HEAD_DIM] with 16-byte chunk c of row r stored at c ^ (r & 7)
/// (swizzled_offset), so every ldmatrix phase reads 8 distinct bank groups.
///
/// Fragment ownership (PTX m16n8k16): lane = 4 g + c holds rows g and g + 8 of the warp's 16,
/// columns 2c, 2c + 1 of each 8-wide fragment.

#include <cuda_runtime.h>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/mma.cuh"
#include "radix_attention/kernels/detail/row_results.cuh"

namespace radix_attention::detail {

/// Per-lane ldmatrix addressing of swizzled [rows][HEAD_DIM] tiles. Lane i addresses row
/// `(i % 8)` of 8x8 matrix `i / 8`; every lane's rows are congruent to `mr` mod 8, so chunk
/// `2 d + b` of such a row sits at `(2 d) ^ (b ^ mr)`: one lane constant XOR a compile-time step.
template <class T, int HEAD_DIM>
struct MmaTileAddressing {
  static constexpr unsigned kRowBytes = HEAD_DIM * sizeof(T);
  unsigned a_row;  ///< byte offset of this lane's A (Q) row within a 16-row slab
  unsigned a_x;
  unsigned k_row;  ///< byte offset of this lane's K row within a 16-token slab
  unsigned k_x;
  unsigned v_row;  ///< byte offset of this lane's V row within a 16-token slab (transposed)
  unsigned v_x;

  __device__ explicit MmaTileAddressing(int lane) {
    const unsigned mi = lane / 8;
    const unsigned mr = lane % 8;
    a_row = ((mi % 2) * 8 + mr) * kRowBytes;
    a_x = (mi / 2) ^ mr;
    k_row = ((mi / 2) * 8 + mr) * kRowBytes;
    k_x = (mi % 2) ^ mr;
    v_row = ((mi % 2) * 8 + mr) * kRowBytes;
    v_x = (mi / 2) ^ mr;
  }
};

/// Loads the A fragment of head-dim step `d` (16 columns) of a 16-row slab at `slab_addr`.
template <class T, int HEAD_DIM>
__device__ __forceinline__ void load_a_fragment(unsigned (&a)[4], unsigned slab_addr,
                                                const MmaTileAddressing<T, HEAD_DIM>& ad, int d) {
  ldmatrix_x4(a, slab_addr + ad.a_row + ((2 * d) ^ ad.a_x) * 16);
}

/**
 * S[16 x TOKENS] = Q K^T for one warp: `k_addr` is the shared address of the warp's first
 * token row of the K tile; Q fragments come from `q_frag(d, a)` (registers or shared memory).
 */
template <class T, int HEAD_DIM, int TOKENS, class QFragment>
__device__ __forceinline__ void warp_qk(float (&s)[TOKENS / 8][4], unsigned k_addr,
                                        const MmaTileAddressing<T, HEAD_DIM>& ad,
                                        QFragment&& q_frag) {
  constexpr unsigned kRowBytes = MmaTileAddressing<T, HEAD_DIM>::kRowBytes;
#pragma unroll
  for (int f = 0; f < TOKENS / 8; ++f) s[f][0] = s[f][1] = s[f][2] = s[f][3] = 0.f;
#pragma unroll
  for (int d = 0; d < HEAD_DIM / 16; ++d) {
    unsigned a[4];
    q_frag(d, a);
#pragma unroll
    for (int kt = 0; kt < TOKENS / 16; ++kt) {
      unsigned b[4];
      ldmatrix_x4(b, k_addr + kt * 16 * kRowBytes + ad.k_row + ((2 * d) ^ ad.k_x) * 16);
      mma_m16n8k16<T>(s[2 * kt], a, b[0], b[1]);
      mma_m16n8k16<T>(s[2 * kt + 1], a, b[2], b[3]);
    }
  }
}

/// O[16 x HEAD_DIM] += P V for one warp; `s` holds the exponentiated scores of TOKENS tokens,
/// `v_addr` the shared address of the warp's first token row of the V tile.
template <class T, int HEAD_DIM, int TOKENS>
__device__ __forceinline__ void warp_pv(float (&o)[HEAD_DIM / 8][4],
                                        const float (&s)[TOKENS / 8][4], unsigned v_addr,
                                        const MmaTileAddressing<T, HEAD_DIM>& ad) {
  constexpr unsigned kRowBytes = MmaTileAddressing<T, HEAD_DIM>::kRowBytes;
#pragma unroll
  for (int kt = 0; kt < TOKENS / 16; ++kt) {
    unsigned a[4];
    a[0] = DTypeTraits<T>::pack2(s[2 * kt][0], s[2 * kt][1]);
    a[1] = DTypeTraits<T>::pack2(s[2 * kt][2], s[2 * kt][3]);
    a[2] = DTypeTraits<T>::pack2(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    a[3] = DTypeTraits<T>::pack2(s[2 * kt + 1][2], s[2 * kt + 1][3]);
#pragma unroll
    for (int dn = 0; dn < HEAD_DIM / 16; ++dn) {
      unsigned b[4];
      ldmatrix_x4_trans(b, v_addr + kt * 16 * kRowBytes + ad.v_row + ((2 * dn) ^ ad.v_x) * 16);
      mma_m16n8k16<T>(o[2 * dn], a, b[0], b[1]);
      mma_m16n8k16<T>(o[2 * dn + 1], a, b[2], b[3]);
    }
  }
}

/// Masks scores of keys at or past each of the lane's two rows' limits (-inf).
template <int SF>
__device__ __forceinline__ void mask_scores(float (&s)[SF][4], int tok0, const int (&limit)[2],
                                            int lane) {
#pragma unroll
  for (int f = 0; f < SF; ++f) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if (tok0 + f * 8 + 2 * (lane % 4) + (e & 1) >= limit[e / 2]) s[f][e] = -INFINITY;
    }
  }
}

/// 2^x by the MUFU instruction alone (`ex2.approx.ftz`: relative error ~2^-22, results below
/// 2^-126 flushed to 0, 2^-inf = 0). exp2f would wrap each one in a range check and two
/// multiplies for denormal results, which a probability never needs: in a wgmma mainloop those
/// four extra instructions per score were a third of the softmax's instruction count.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

/// Running softmax state of the two rows a lane holds (g and g + 8), base 2.
struct WarpSoftmax {
  float m[2] = {-INFINITY, -INFINITY};  ///< running max of scale_log2 x score
  float l[2] = {0.f, 0.f};              ///< running sum (this lane's columns only until finish)

  /// Exponentiates the scores of one tile in place (masked scores must be -inf) and rescales
  /// `o` by exp2(m_old - m_new) where the max moved. Rows that have seen no unmasked score keep
  /// m = -inf and subtract 0 instead (no NaN).
  template <int SF, int OF>
  __device__ __forceinline__ void update(float (&s)[SF][4], float (&o)[OF][4], float scale_log2) {
    float alpha[2];
    exponentiate(s, scale_log2, alpha);
    rescale(o, alpha);
  }

  /// update() without touching `o`: `alpha` receives the factors `o` must be rescaled by
  /// (rescale) before this tile's P V is added, for pipelines whose P V of the previous tile
  /// still accumulates into `o` while this tile is exponentiated.
  template <int SF>
  __device__ __forceinline__ void exponentiate(float (&s)[SF][4], float scale_log2,
                                               float (&alpha)[2]) {
    // Four independent partial maxima and sums per row: the reductions are dependency chains
    // of SF / 4 steps instead of SF, which shortens the softmax between a warpgroup's products.
    constexpr int kLanes = SF % 4 == 0 ? 4 : 1;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float part[kLanes];
#pragma unroll
      for (int j = 0; j < kLanes; ++j) part[j] = -INFINITY;
#pragma unroll
      for (int f = 0; f < SF; ++f) {
        part[f % kLanes] = fmaxf(part[f % kLanes], fmaxf(s[f][2 * i], s[f][2 * i + 1]));
      }
      float mx = part[0];
#pragma unroll
      for (int j = 1; j < kLanes; ++j) mx = fmaxf(mx, part[j]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[i], mx * scale_log2);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;
      alpha[i] = fast_exp2(m[i] - m_use);
      m[i] = m_new;
#pragma unroll
      for (int j = 0; j < kLanes; ++j) part[j] = 0.f;
#pragma unroll
      for (int f = 0; f < SF; ++f) {
        s[f][2 * i] = fast_exp2(fmaf(s[f][2 * i], scale_log2, -m_use));
        s[f][2 * i + 1] = fast_exp2(fmaf(s[f][2 * i + 1], scale_log2, -m_use));
        part[f % kLanes] += s[f][2 * i] + s[f][2 * i + 1];
      }
      float sum = part[0];
#pragma unroll
      for (int j = 1; j < kLanes; ++j) sum += part[j];
      l[i] = l[i] * alpha[i] + sum;
    }
  }

  /// o *= alpha per row. Once the maxima settle most tiles leave them unchanged: the multiply is
  /// skipped then (warp-uniform).
  template <int OF>
  __device__ __forceinline__ static void rescale(float (&o)[OF][4], const float (&alpha)[2]) {
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int f = 0; f < OF; ++f) {
        o[f][0] *= alpha[0];
        o[f][1] *= alpha[0];
        o[f][2] *= alpha[1];
        o[f][3] *= alpha[1];
      }
    }
  }

  /// Completes the row sums over the quad of lanes that share each row.
  __device__ __forceinline__ void finish() {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 1);
      l[i] += __shfl_xor_sync(0xffffffffu, l[i], 2);
    }
  }

  /// Natural-log LSE of row i (after finish); -inf for a row that saw no key.
  __device__ __forceinline__ float lse(int i) const { return natural_lse(m[i], l[i]); }
  /// 1 / row sum (after finish); 0 for a row that saw no key, so its output is 0.
  __device__ __forceinline__ float inv_sum(int i) const { return l[i] > 0.f ? 1.f / l[i] : 0.f; }
};

}  // namespace radix_attention::detail
