#pragma once
/// @file
/// Warpgroup-level mainloop pieces of the attention tile engine on Hopper `wgmma` (sm_90a): one
/// warpgroup owns 64 query rows (the m64 of the instruction), K/V tiles sit in 128B-swizzled
/// shared memory (Sw128Layout).
///   issue_qk / wgmma_qk:  S[64 x TILE] = Q K^T, both operands from shared memory
///   pack_p:               the exponentiated S accumulators as bf16 / fp16 A fragments of P
///   issue_pv / wgmma_pv:  O[64 x HEAD_DIM] += P V, P from registers, V read MN-major
/// The issue_* forms commit one wgmma group and return at once (pipelines overlap them with
/// other work and wait later); wgmma_* wait for their own group. A warp's accumulators are laid
/// out exactly as m16n8 accumulators of its 16 rows, so the mma.sync softmax, masks and epilogue
/// (mma_attention_warp.cuh, attention_epilogue.cuh) apply unchanged.

#include <cstdint>

#include "radix_attention/core/dtype.cuh"
#include "radix_attention/kernels/detail/wgmma.cuh"

namespace radix_attention::detail {

/// Issues S = Q K^T: k-steps of 16 walk 32 bytes along a 128-byte swizzled row, then on to the
/// next 64-column block (ROWS rows of Q apart, TILE rows of K apart). Committed, not waited for.
template <class T, int HEAD_DIM, int TILE, int ROWS>
__device__ __forceinline__ void issue_qk(float (&s)[TILE / 2], unsigned q_addr, unsigned k_addr) {
  // Each k-step's descriptors are the tile's plus a compile-time byte offset (>> 4 in the
  // address field, which never carries: shared addresses stay below 2^18): one add per operand
  // instead of rebuilding the descriptor from the address.
  const std::uint64_t q_desc = kmajor_descriptor(q_addr);
  const std::uint64_t k_desc = kmajor_descriptor(k_addr);
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < HEAD_DIM / 16; ++k) {
    const unsigned in_row = (k % 4) * 32u;  // 16 elements = 32 bytes per k-step
    Wgmma<T, TILE>::ss(s, descriptor_plus(q_desc, (k / 4) * ROWS * 128u + in_row),
                       descriptor_plus(k_desc, (k / 4) * TILE * 128u + in_row), k > 0);
  }
  wgmma_commit();
}

/// The exponentiated scores of a TILE-token tile as the A fragments of P (k-steps of 16 keys).
template <class T, int TILE>
__device__ __forceinline__ void pack_p(unsigned (&a)[TILE / 16][4], const float (&s)[TILE / 8][4]) {
#pragma unroll
  for (int kt = 0; kt < TILE / 16; ++kt) {
    a[kt][0] = DTypeTraits<T>::pack2(s[2 * kt][0], s[2 * kt][1]);
    a[kt][1] = DTypeTraits<T>::pack2(s[2 * kt][2], s[2 * kt][3]);
    a[kt][2] = DTypeTraits<T>::pack2(s[2 * kt + 1][0], s[2 * kt + 1][1]);
    a[kt][3] = DTypeTraits<T>::pack2(s[2 * kt + 1][2], s[2 * kt + 1][3]);
  }
}

/// Issues O += P V: a k-step of 16 tokens is two 8-row groups (2048 bytes) down the V tile.
/// Committed, not waited for; `a` must stay untouched until the group completes.
template <class T, int HEAD_DIM, int TILE>
__device__ __forceinline__ void issue_pv(float (&o)[HEAD_DIM / 2],
                                         const unsigned (&a)[TILE / 16][4], unsigned v_addr) {
  const std::uint64_t v_desc = mnmajor_descriptor(v_addr, TILE);
  wgmma_fence_operands(o);
  wgmma_fence();
#pragma unroll
  for (int kt = 0; kt < TILE / 16; ++kt) {
    Wgmma<T, HEAD_DIM>::rs_tn(o, a[kt], descriptor_plus(v_desc, kt * 2048u), 1);
  }
  wgmma_commit();
}

/// S = Q K^T, waited for.
template <class T, int HEAD_DIM, int TILE, int ROWS>
__device__ __forceinline__ void wgmma_qk(float (&s)[TILE / 2], unsigned q_addr, unsigned k_addr) {
  issue_qk<T, HEAD_DIM, TILE, ROWS>(s, q_addr, k_addr);
  wgmma_wait<0>();
  wgmma_fence_operands(s);
}

/// O += P V from the exponentiated scores, waited for.
template <class T, int HEAD_DIM, int TILE>
__device__ __forceinline__ void wgmma_pv(float (&o)[HEAD_DIM / 2], const float (&s)[TILE / 8][4],
                                         unsigned v_addr) {
  unsigned a[TILE / 16][4];
  pack_p<T, TILE>(a, s);
  issue_pv<T, HEAD_DIM, TILE>(o, a, v_addr);
  wgmma_wait<0>();
  wgmma_fence_operands(o);
}

}  // namespace radix_attention::detail
