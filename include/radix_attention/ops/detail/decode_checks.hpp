#pragma once
/// @file
/// Argument checks shared by the decode launchers (paged_decode, radix_decode): the shapes of
/// the heads, the paged KV cache and the block tables, and the device pointers both read. Each
/// launcher keeps its own extra checks (options, workspace, plan) next to its launch code.
/// Plain C++17: the pointers are only compared, never dereferenced.

#include <cstdint>
#include <type_traits>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention::detail {

/// Calls make(std::integral_constant<int, D>{}) for head_dim = D in {64, 128, 256}, the head
/// sizes the decode kernels are instantiated for, and returns its result.
/// @throw InvalidArgument for any other head_dim.
template <class Make>
auto dispatch_head_dim(int head_dim, Make&& make) {
  switch (head_dim) {
    case 64:
      return make(std::integral_constant<int, 64>{});
    case 128:
      return make(std::integral_constant<int, 128>{});
    case 256:
      return make(std::integral_constant<int, 256>{});
    default:
      break;
  }
  throw InvalidArgument(
      concat("radix_attention: head_dim = ", head_dim, ": must be 64, 128 or 256"));
}

inline bool is_aligned16(const void* ptr) {
  return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0;
}

/// How many sequences a launcher accepts, and the words its error message uses for that
/// (paged_decode puts sequences on grid.z, so at most 65535; radix_decode has no such bound).
struct NumSeqsLimit {
  int max;
  const char* requirement;
};

/// Heads and KV cache shapes, in the order every launcher reports them (a test that breaks
/// several shapes at once sees the first of these).
template <class T>
void check_heads_and_cache(int num_q_heads, const PagedKvCacheView<T>& cache) {
  expects(cache.num_kv_heads >= 1, "cache.num_kv_heads", cache.num_kv_heads, "must be >= 1");
  expects(num_q_heads >= 1, "num_q_heads", num_q_heads, "must be >= 1");
  expects_that(num_q_heads % cache.num_kv_heads == 0, "num_q_heads = ", num_q_heads,
               " must be a multiple of cache.num_kv_heads = ", cache.num_kv_heads);
  expects(cache.head_dim == 64 || cache.head_dim == 128 || cache.head_dim == 256, "cache.head_dim",
          cache.head_dim, "must be 64, 128 or 256");
  expects(cache.block_size >= 1, "cache.block_size", cache.block_size, "must be >= 1");
  expects(cache.num_blocks >= 1, "cache.num_blocks", cache.num_blocks, "must be >= 1");
  expects(static_cast<std::int64_t>(cache.num_blocks) * cache.block_size <= INT32_MAX,
          "cache.num_blocks * cache.block_size",
          static_cast<std::int64_t>(cache.num_blocks) * cache.block_size,
          "must fit in int32 (token slots are int32)");
}

/// Block-table shapes.
inline void check_tables(const BlockTableView& tables, NumSeqsLimit num_seqs_limit) {
  expects(tables.num_seqs >= 0 && tables.num_seqs <= num_seqs_limit.max, "tables.num_seqs",
          tables.num_seqs, num_seqs_limit.requirement);
  expects(tables.max_blocks_per_seq >= 1, "tables.max_blocks_per_seq", tables.max_blocks_per_seq,
          "must be >= 1");
  expects(tables.row_stride >= tables.max_blocks_per_seq, "tables.row_stride", tables.row_stride,
          "must be >= tables.max_blocks_per_seq");
}

/// K/V element strides the attention kernels read with 16-byte copies: >= 0 (0 = the NHD
/// default) and, resolved, multiples of 16 bytes (every row then starts 16-byte aligned, given
/// aligned cache.k and cache.v).
template <class T>
void check_kv_strides(const PagedKvCacheView<T>& cache) {
  expects_that(cache.block_stride >= 0 && cache.token_stride >= 0 && cache.head_stride >= 0,
               "cache strides (block ", cache.block_stride, ", token ", cache.token_stride,
               ", head ", cache.head_stride, ") must be >= 0 (0 = NHD default)");
  const KvStrides s = resolved_strides(cache);
  constexpr std::int64_t kVec = 16 / sizeof(T);  // elements per 16-byte copy
  expects_that(s.block % kVec == 0 && s.token % kVec == 0 && s.head % kVec == 0,
               "cache strides (block ", s.block, ", token ", s.token, ", head ", s.head,
               " elements) must be multiples of 16 bytes (", kVec, " elements)");
}

/// A row stride of q or out (`name`, in elements): 0 (dense rows of `row_elems`) or at least
/// `row_elems` and a multiple of 16 bytes, so that 16-byte loads of every row stay aligned.
/// Returns the resolved stride.
template <class T>
std::int64_t checked_row_stride(const char* name, std::int64_t stride, std::int64_t row_elems) {
  const std::int64_t resolved = stride != 0 ? stride : row_elems;
  expects(resolved >= row_elems && resolved % static_cast<std::int64_t>(16 / sizeof(T)) == 0, name,
          stride, "must be 0 or >= num_q_heads * head_dim and a multiple of 16 bytes");
  return resolved;
}

/// Heads, cache (strides included) and tables of a decode launch.
template <class T>
void check_decode_shapes(int num_q_heads, const PagedKvCacheView<T>& cache,
                         const BlockTableView& tables, NumSeqsLimit num_seqs_limit) {
  check_heads_and_cache(num_q_heads, cache);
  check_tables(tables, num_seqs_limit);
  check_kv_strides(cache);
}

/// Null and alignment checks of the device pointers a decode launch reads or writes: q, out and
/// K/V are read 16 bytes at a time (rows at 16-byte multiples, see checked_row_stride and
/// check_kv_strides); lse may be nullptr. radix_decode's kernel never reads
/// tables.context_lens, so it may be null there (`reads_context_lens` = false).
template <class T, class TKv>
void check_decode_pointers(const T* q, const T* out, const PagedKvCacheView<TKv>& cache,
                           const BlockTableView& tables, const float* lse,
                           bool reads_context_lens) {
  expects(q != nullptr, "q", "nullptr", "must be a device pointer");
  expects(out != nullptr, "out", "nullptr", "must be a device pointer");
  expects(cache.k != nullptr, "cache.k", "nullptr", "must be a device pointer");
  expects(cache.v != nullptr, "cache.v", "nullptr", "must be a device pointer");
  expects(tables.block_tables != nullptr, "tables.block_tables", "nullptr",
          "must be a device pointer");
  if (reads_context_lens) {
    expects(tables.context_lens != nullptr, "tables.context_lens", "nullptr",
            "must be a device pointer");
  }
  expects(is_aligned16(q), "q", static_cast<const void*>(q),
          "must be 16-byte aligned (vector loads)");
  expects(is_aligned16(out), "out", static_cast<const void*>(out), "must be 16-byte aligned");
  expects(is_aligned16(cache.k), "cache.k", static_cast<const void*>(cache.k),
          "must be 16-byte aligned");
  expects(is_aligned16(cache.v), "cache.v", static_cast<const void*>(cache.v),
          "must be 16-byte aligned");
  expects(reinterpret_cast<std::uintptr_t>(lse) % alignof(float) == 0, "lse",
          static_cast<const void*>(lse), "must be float-aligned");
}

}  // namespace radix_attention::detail
