#pragma once
/// @file
/// The B operands of the decode kernels' m16n8k16 MMAs built in registers straight from an fp8
/// e4m3 staging tile: each lane reads the fp8 bytes it needs with 16-byte shared loads and
/// converts them exactly (e4m3x2_to), so a landed stage is read from shared memory once and no
/// 16-bit copy of it is written back (no second pass, no barrier for one).
///
/// With g = lane / 4 and c = lane % 4, a B fragment holds B[k][n] for k in {2c, 2c + 1,
/// 2c + 8, 2c + 9}, n = g. The reductions let the kernels relabel operands freely:
///  - S = Q K^T reduces over head_dim, so head_dim is permuted (fp8_qk_dim) such that the
///    K bytes a lane needs for four k-steps are 16 consecutive bytes of one token row; Q, read
///    once per CTA, is stored in shared memory in the same permuted order.
///  - O += P V reduces over tokens, and a lane's tokens 2c, 2c + 1, 2c + 8, 2c + 9 are four
///    whole rows: the lane reads the same 16-byte span of each and byte-permutes (prmt) one
///    byte of each row into a pair. Those 16 consecutive dims are column g of 16 n-tiles, so
///    the output columns come out permuted (fp8_pv_dim), which the epilogues undo when they
///    store the accumulators.
///
/// Staging tile (Fp8FragmentTile): row-major fp8 rows, 16-byte chunk c of row r at
/// c ^ swizzle(r). The swizzle keeps each 8-lane phase of the 16-byte loads on 8 distinct
/// bank groups: K reads rows g (chunk c) and V reads rows 2c, 2c + 1 (chunk g); with
/// swizzle(r) = 4 (r & 1) ^ (r & 6) both patterns hit every bank group once at head_dim 128
/// and 256 (at 64 the V reads of even rows share half the banks: 2-way).

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "radix_attention/kernels/detail/fp8_dequant.cuh"
#include "radix_attention/kernels/detail/mma.cuh"

namespace radix_attention::detail {

/// Byte layout of a staged fp8 K or V tile (see the file comment); rows of a 16-token group
/// must start on a multiple of 8 so that a group's swizzle is its local row's.
template <int HEAD_DIM>
struct Fp8FragmentTile {
  static_assert(HEAD_DIM % 64 == 0, "fp8 fragments take head_dim in multiples of 64");
  static constexpr int kChunks = HEAD_DIM / 16;  // 16-byte chunks per row
  __device__ __forceinline__ static int swizzle(int row) {
    return (((row & 1) << 2) ^ (row & 6)) & (kChunks - 1);
  }
  __device__ __forceinline__ static int offset(int row, int chunk) {
    return row * HEAD_DIM + ((chunk ^ swizzle(row)) << 4);
  }
};

/// Physical head_dim index of logical index `l` of the Q K^T reduction: k-step kk = l / 16,
/// k = l % 16 = 8 h + 2 c + e lives at 64 (kk / 4) + 16 c + 4 (kk % 4) + 2 h + e, so lane c
/// finds its b0, b1 of k-steps 4j .. 4j + 3 in the 16 bytes at 64 j + 16 c of a K row.
__host__ __device__ constexpr int fp8_qk_dim(int l) {
  const int kk = l / 16;
  const int k = l % 16;
  return 64 * (kk / 4) + 16 * ((k % 8) / 2) + 4 * (kk % 4) + 2 * (k / 8) + k % 2;
}

/// Bytes of one V row a lane reads per block: lane g holds columns g of every n-tile, and 16
/// n-tiles (128 dims) per 16-byte read; head_dim 64 has 8 n-tiles, so 8 bytes.
template <int HEAD_DIM>
inline constexpr int kFp8VBytes = HEAD_DIM >= 128 ? 16 : 8;

/// Physical head_dim index of column n of output n-tile i of fp8_pv_16: block i / w of 8 w
/// dims, lane n's w bytes in it, byte i % w of those (w = kFp8VBytes).
template <int HEAD_DIM>
__host__ __device__ constexpr int fp8_pv_dim(int i, int n) {
  constexpr int w = kFp8VBytes<HEAD_DIM>;
  return (i / w) * (8 * w) + n * w + i % w;
}

/// Word `i` of a uint4 (i a compile-time constant after unrolling).
__device__ __forceinline__ std::uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/**
 * S[16 x TOKENS] = Q K^T for TOKENS tokens whose staged rows start at `k_rows` (a row of a
 * Fp8FragmentTile that is a multiple of 8): s[f] holds tokens f * 8 + 2c + {0, 1} of rows g,
 * g + 8, as the 16-bit mainloops' do. `q_frag(kk, a)` gives Q's A fragment of k-step kk in the
 * fp8_qk_dim order.
 */
template <class T, int HEAD_DIM, int TOKENS, class QFragment>
__device__ __forceinline__ void fp8_qk(float (&s)[TOKENS / 8][4], const unsigned char* k_rows,
                                       int lane, QFragment&& q_frag) {
  using Tile = Fp8FragmentTile<HEAD_DIM>;
  static_assert(TOKENS % 8 == 0, "whole n-tiles of 8 tokens");
  const int g = lane / 4;
  // Rows g + 8 f share g's swizzle; chunk (4j + c) ^ swizzle = 4j ^ x for x < 8.
  const int x = (lane % 4) ^ Tile::swizzle(g);
  const unsigned char* row = k_rows + g * HEAD_DIM;
#pragma unroll
  for (int f = 0; f < TOKENS / 8; ++f) s[f][0] = s[f][1] = s[f][2] = s[f][3] = 0.f;
#pragma unroll
  for (int j = 0; j < HEAD_DIM / 64; ++j) {
    const int off = ((4 * j) ^ x) << 4;
    uint4 k[TOKENS / 8];
#pragma unroll
    for (int f = 0; f < TOKENS / 8; ++f) {
      k[f] = *reinterpret_cast<const uint4*>(row + f * 8 * HEAD_DIM + off);
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      unsigned a[4];
      q_frag(4 * j + w, a);
#pragma unroll
      for (int f = 0; f < TOKENS / 8; ++f) {
        unsigned b0, b1;
        dequant_e4m3x4<T>(word_of(k[f], w), b0, b1);
        mma_m16n8k16<T>(s[f], a, b0, b1);
      }
    }
  }
}

/**
 * O[16 x HEAD_DIM] += P V for one k-step of 16 tokens whose staged rows start at `v_rows` (a
 * multiple-of-8 row of a Fp8FragmentTile); `a` is P's A fragment (tokens in the S order).
 * Column n of o[i] accumulates head_dim index fp8_pv_dim<HEAD_DIM>(i, n).
 */
template <class T, int HEAD_DIM>
__device__ __forceinline__ void fp8_pv_16(float (&o)[HEAD_DIM / 8][4], const unsigned (&a)[4],
                                          const unsigned char* v_rows, int lane) {
  using Tile = Fp8FragmentTile<HEAD_DIM>;
  constexpr int kW = kFp8VBytes<HEAD_DIM>;
  const int g = lane / 4;
  const int c = lane % 4;
  // Rows 2c, 2c + 1, 2c + 8, 2c + 9: the tokens of b0 (first two) and b1 (last two).
  const unsigned char* rows[4];
  int x[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rows[r] = v_rows + (2 * c + r) * HEAD_DIM;
    rows[r + 2] = rows[r] + 8 * HEAD_DIM;
    x[r] = Tile::swizzle(2 * c + r);
  }
#pragma unroll
  for (int blk = 0; blk < HEAD_DIM / (8 * kW); ++blk) {
    uint4 v[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      if constexpr (kW == 16) {
        // Chunk 8 blk + g; the swizzle (< 8) flips only its low bits.
        v[r] = *reinterpret_cast<const uint4*>(rows[r] + ((8 * blk + (g ^ x[r % 2])) << 4));
      } else {
        // head_dim 64: 8 bytes, half g % 2 of chunk g / 2.
        const uint2 h =
            *reinterpret_cast<const uint2*>(rows[r] + (((g / 2) ^ x[r % 2]) << 4) + (g % 2) * 8);
        v[r] = make_uint4(h.x, h.y, 0u, 0u);
      }
    }
#pragma unroll
    for (int i = 0; i < kW; ++i) {
      // Byte i % 4 of word i / 4 of rows (2c, 2c + 1), and of rows (2c + 8, 2c + 9): a pair.
      const std::uint32_t sel = e4m3x2_selector(i % 4, i % 4);
      const std::uint32_t p0 = prmt_b32(word_of(v[0], i / 4), word_of(v[1], i / 4), sel);
      const std::uint32_t p1 = prmt_b32(word_of(v[2], i / 4), word_of(v[3], i / 4), sel);
      mma_m16n8k16<T>(o[blk * kW + i], a, e4m3x2_to<T>(p0), e4m3x2_to<T>(p1));
    }
  }
}

/// Chunk `chunk` (8 elements) of a Q row laid out in the fp8_qk_dim order: what a swizzled
/// 16-bit Q tile keeps there so that its unchanged ldmatrix A fragments match fp8_qk. Pairs
/// stay whole (fp8_qk_dim(2t + 1) = fp8_qk_dim(2t) + 1), so it is four 4-byte loads.
template <class T>
__device__ __forceinline__ uint4 fp8_qk_q_chunk(const T* q_row, int chunk) {
  const auto* pairs = reinterpret_cast<const std::uint32_t*>(q_row);
  return make_uint4(pairs[fp8_qk_dim(8 * chunk) / 2], pairs[fp8_qk_dim(8 * chunk + 2) / 2],
                    pairs[fp8_qk_dim(8 * chunk + 4) / 2], pairs[fp8_qk_dim(8 * chunk + 6) / 2]);
}

/**
 * Hands row g + 8 `half` of fp8_pv_16's accumulators, times `scale`, to `store(dim, v)` in
 * head_dim order: v = the 4 consecutive dims dim .. dim + 3 (a lane's columns 2c + e of
 * n-tiles blk * w .. blk * w + w - 1 are w consecutive dims, so the stores are 4-wide).
 */
template <int HEAD_DIM, class Store>
__device__ __forceinline__ void store_fp8_pv_row(const float (&o)[HEAD_DIM / 8][4], int half,
                                                 int lane, float scale, Store&& store) {
  constexpr int kW = kFp8VBytes<HEAD_DIM>;
  const int c = lane % 4;
#pragma unroll
  for (int blk = 0; blk < HEAD_DIM / (8 * kW); ++blk) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int q = 0; q < kW / 4; ++q) {
        const int i = blk * kW + 4 * q;
        const int v = 2 * half + e;
        const float four[4] = {o[i][v] * scale, o[i + 1][v] * scale, o[i + 2][v] * scale,
                               o[i + 3][v] * scale};
        store(fp8_pv_dim<HEAD_DIM>(i, 2 * c + e), four);
      }
    }
  }
}

}  // namespace radix_attention::detail
