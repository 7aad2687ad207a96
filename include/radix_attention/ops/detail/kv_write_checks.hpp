#pragma once
/// @file
/// Argument checks of the cache writers (kv_append, copy_blocks): the writable cache view
/// (shape, strides, a layout in which no two elements share an address), the new K/V rows,
/// and which path (16-byte packets or single elements) the addresses allow. Plain C++17: the
/// pointers are only compared, never dereferenced.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"

namespace radix_attention::detail {

inline bool is_aligned_to(const void* ptr, std::size_t alignment) {
  return reinterpret_cast<std::uintptr_t>(ptr) % alignment == 0;
}

/// The kernels index row items (2 x heads x head_dim packets) and tokens with int.
inline constexpr std::int64_t kMaxRowElements = std::int64_t(1) << 29;
inline constexpr int kMaxAppendTokens = 1 << 30;

/// True when (block, offset, head, element) -> address is one-to-one: with the dimensions of
/// extent > 1 sorted by stride, each stride is at least the span of the ones inside it. A
/// layout that fails would make two writes race for one address.
template <class T>
bool cache_layout_is_one_to_one(const PagedKvCacheMutView<T>& cache) {
  const KvStrides s = resolved_strides(cache);
  struct Dim {
    std::int64_t stride, extent;
  };
  std::array<Dim, 4> dims{Dim{1, cache.head_dim}, Dim{s.head, cache.num_kv_heads},
                          Dim{s.token, cache.block_size}, Dim{s.block, cache.num_blocks}};
  std::sort(dims.begin(), dims.end(), [](Dim a, Dim b) { return a.stride < b.stride; });
  std::int64_t span = 1;  // elements covered by the dimensions inside the current one
  for (const Dim& d : dims) {
    if (d.extent == 1) continue;
    if (d.stride < span || d.stride > INT64_MAX / d.extent) return false;  // overlap, overflow
    span = d.stride * d.extent;
  }
  return true;
}

/// Shape, strides and pointers of a cache that a writer writes. Order: extents, strides,
/// layout, pointers (a test that breaks several sees the first).
template <class T>
void check_writable_cache(const PagedKvCacheMutView<T>& cache) {
  expects(cache.num_blocks >= 1, "cache.num_blocks", cache.num_blocks, "must be >= 1");
  expects(cache.block_size >= 1, "cache.block_size", cache.block_size, "must be >= 1");
  expects(cache.num_kv_heads >= 1, "cache.num_kv_heads", cache.num_kv_heads, "must be >= 1");
  expects(cache.head_dim >= 1, "cache.head_dim", cache.head_dim, "must be >= 1");
  expects(static_cast<std::int64_t>(cache.num_blocks) * cache.block_size <= INT32_MAX,
          "cache.num_blocks * cache.block_size",
          static_cast<std::int64_t>(cache.num_blocks) * cache.block_size,
          "must fit in int32 (token slots are int32)");
  expects(static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim <= kMaxRowElements,
          "cache.num_kv_heads * cache.head_dim",
          static_cast<std::int64_t>(cache.num_kv_heads) * cache.head_dim, "must be <= 2^29");
  expects(cache.block_stride >= 0, "cache.block_stride", cache.block_stride,
          "must be >= 0 (0 = NHD default)");
  expects(cache.token_stride >= 0, "cache.token_stride", cache.token_stride,
          "must be >= 0 (0 = NHD default)");
  expects(cache.head_stride >= 0, "cache.head_stride", cache.head_stride,
          "must be >= 0 (0 = NHD default)");
  // The dense NHD layout (all strides 0, the common case) is one-to-one by construction; the
  // extent checks above keep its span below 2^60, so only explicit strides need the sort.
  expects_that(is_dense_nhd(cache.as_const()) || cache_layout_is_one_to_one(cache),
               "cache strides (block ", cache.block_stride, ", token ", cache.token_stride,
               ", head ", cache.head_stride, ") with head_dim ", cache.head_dim,
               ": two cache elements would share an address");
  expects(cache.k != nullptr, "cache.k", "nullptr", "must be a device pointer");
  expects(cache.v != nullptr, "cache.v", "nullptr", "must be a device pointer");
  expects(is_aligned_to(cache.k, alignof(T)), "cache.k", static_cast<const void*>(cache.k),
          "must be aligned to its element type");
  expects(is_aligned_to(cache.v, alignof(T)), "cache.v", static_cast<const void*>(cache.v),
          "must be aligned to its element type");
}

/// True when every cache address a 16-byte packet starts at is a multiple of 16 bytes.
template <class T>
bool cache_allows_packets(const PagedKvCacheMutView<T>& cache) {
  constexpr std::int64_t kElems = 16 / sizeof(T);
  const KvStrides s = resolved_strides(cache);
  return cache.head_dim % kElems == 0 && s.block % kElems == 0 && s.token % kElems == 0 &&
         s.head % kElems == 0 && is_aligned_to(cache.k, 16) && is_aligned_to(cache.v, 16);
}

/// The new rows of kv_append, strides resolved (0 = dense defaults).
struct NewRowStrides {
  std::int64_t token;
  std::int64_t head;
};

/// Checks the new K/V rows [num_tokens, num_kv_heads, head_dim] and resolves their strides.
template <class T>
NewRowStrides check_new_rows(const T* k, const T* v, int num_tokens, std::int64_t token_stride,
                             std::int64_t head_stride, int num_kv_heads, int head_dim) {
  expects(num_tokens >= 0 && num_tokens <= kMaxAppendTokens, "input.num_tokens", num_tokens,
          "must be in [0, 2^30]");
  expects(token_stride >= 0, "input.token_stride", token_stride, "must be >= 0 (0 = dense)");
  expects(head_stride >= 0, "input.head_stride", head_stride, "must be >= 0 (0 = head_dim)");
  const NewRowStrides s{
      token_stride != 0 ? token_stride : static_cast<std::int64_t>(num_kv_heads) * head_dim,
      head_stride != 0 ? head_stride : head_dim};
  if (num_tokens == 0) return s;
  expects(k != nullptr, "input.k", "nullptr", "must be a device pointer");
  expects(v != nullptr, "input.v", "nullptr", "must be a device pointer");
  expects(is_aligned_to(k, alignof(T)), "input.k", static_cast<const void*>(k),
          "must be aligned to its element type");
  expects(is_aligned_to(v, alignof(T)), "input.v", static_cast<const void*>(v),
          "must be aligned to its element type");
  return s;
}

/// True when every input packet (head_dim / packet_elems of them per head) starts on 16 bytes.
template <class T>
bool rows_allow_packets(const T* k, const T* v, NewRowStrides s, int head_dim, int packet_elems) {
  const auto bytes = [](std::int64_t elems) {
    return elems * static_cast<std::int64_t>(sizeof(T));
  };
  return head_dim % packet_elems == 0 && bytes(s.token) % 16 == 0 && bytes(s.head) % 16 == 0 &&
         is_aligned_to(k, 16) && is_aligned_to(v, 16);
}

}  // namespace radix_attention::detail
