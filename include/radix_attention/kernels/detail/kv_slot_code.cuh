#pragma once
/// @file
/// How the decode kernels address a token's K/V row for any layout the cache view's strides
/// describe (NHD, HND, combined, padded), with the per-token part in one int32: the tensor-core
/// kernels resolve the block-table entries of upcoming tokens a tile ahead into int32 rings in
/// shared memory, and at head_dim 128 the radix kernel's two CTAs per SM leave no room for
/// 64-bit entries (115,456 of the 115,712 bytes each CTA may take; 64-bit: 116,224).
///
/// Row offset (elements from cache.k / cache.v) of token offset `o` of block `b`, kv head `h`:
///   slot = b * block_mul + o * token_mul,   offset = slot * slot_elems + h * head_stride.
/// Layouts whose blocks are `block_size` token strides apart (NHD, any head stride) use
/// block_mul = block_size, token_mul = 1, slot_elems = token_stride: the slot is the cache slot
/// (b * block_size + o), which fits in int32 for every valid cache. Other layouts count in
/// 16-byte units: block_mul = block_stride / u, token_mul = token_stride / u, slot_elems = u,
/// u = 16 / sizeof(T); the launchers check that their slots fit in int32 (a cache of at most
/// 2^31 16-byte units, 32 GiB, from each of cache.k and cache.v).
///
/// Also here: the block-table lookup that turns a token index into its slot, in two halves
/// (load_table_entry, table_entry_slot) so that the mainloops can issue the table read early
/// and use its register late.

#include <cuda_runtime.h>

#include <cstdint>

#include "radix_attention/kernels/detail/bounds_check.cuh"

namespace radix_attention::detail {

/// See the file comment; built and checked on the host by ops/detail/kv_slot_code.cuh.
struct KvSlotCode {
  int block_mul;
  int token_mul;
  std::int64_t slot_elems;   ///< elements per slot unit
  std::int64_t head_stride;  ///< elements between kv heads of one token
  int num_blocks;            ///< block ids are in [0, num_blocks) (checked in bounds-check builds)
};

/// The int32 slot of token offset `offset` in block `block` (head not included).
__host__ __device__ __forceinline__ int kv_slot(const KvSlotCode& code, int block, int offset) {
  return block * code.block_mul + offset * code.token_mul;
}

/// Element offset of kv head `kv_head`'s row at `slot`.
__host__ __device__ __forceinline__ long long kv_slot_offset(const KvSlotCode& code, int slot,
                                                             int kv_head) {
  return static_cast<long long>(slot) * code.slot_elems +
         static_cast<long long>(kv_head) * code.head_stride;
}

/// Block id of token `token` of block-table row `table_row` (one int32 load), -1 at or past
/// `end`. Kept apart from table_entry_slot so that a lookahead can issue the load and leave its
/// register unread until the slot is stored: using it at once would stall the warp for the whole
/// table read, a DRAM miss per tile at block size 1.
__device__ __forceinline__ int load_table_entry(const std::int32_t* __restrict__ table_row,
                                                int token, int end, int block_size) {
  return token < end ? __ldg(table_row + token / block_size) : -1;
}

/// Slot (kv_slot) of token `token` from its block id `block` (load_table_entry); -1 at or past
/// `end`. Bounds-check builds trap on a block id outside [0, code.num_blocks).
__device__ __forceinline__ int table_entry_slot(int block, int token, int end, int block_size,
                                                const KvSlotCode& code) {
  if (token >= end) return -1;
  RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(block >= 0 && block < code.num_blocks);
  return kv_slot(code, block, token % block_size);
}

}  // namespace radix_attention::detail
