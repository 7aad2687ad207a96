#pragma once
/// @file
/// Tensor-side helpers shared by the attention and cache-writer bindings: the element-type map,
/// the checks that turn a pair of (possibly strided) 4-D cache tensors into KvCacheArgs, and the
/// query / output checks every attention op makes.

#include <ATen/ATen.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>

#include "launch.hpp"
#include "tensor_checks.hpp"

namespace radix_attention_torch {

/// The launch-boundary element type of a float32 / float16 / bfloat16 tensor (checked before).
inline DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat;
    case at::kHalf:
      return DType::kHalf;
    default:
      return DType::kBFloat16;
  }
}

/// The launch-boundary element type of a cache tensor (float8_e4m3fn included; checked before).
inline CacheDType to_cache_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return CacheDType::kFloat;
    case at::kHalf:
      return CacheDType::kHalf;
    case at::kFloat8_e4m3fn:
      return CacheDType::kFp8E4M3;
    default:
      return CacheDType::kBFloat16;
  }
}

/// Stride of dimension d for a view: 0 (the library's "dense default") where the extent is 1,
/// whose stride torch leaves arbitrary and the kernels never use.
inline std::int64_t view_stride(const at::Tensor& t, std::int64_t d) {
  return t.size(d) > 1 ? t.stride(d) : 0;
}

/// Checks the 4-D layout of one cache tensor: [num_blocks, block_size, num_kv_heads, head_dim]
/// with unit stride along head_dim and positive strides elsewhere (any order: NHD, HND through
/// .transpose(1, 2), the halves of a combined [blocks, 2, block, heads, dim] tensor).
inline void check_cache_layout(const ArgChecker& c, const char* name, const at::Tensor& t,
                               const at::Tensor& ref, const char* ref_name) {
  c.cuda(name, t, ref, ref_name);
  c.dim(name, t, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  if (t.size(3) > 1 && t.stride(3) != 1) {
    c.fail_value(name, t, "must have unit stride along head_dim (stride(3) == 1)");
  }
  for (std::int64_t d = 0; d < 3; ++d) {
    if (t.size(d) > 1 && t.stride(d) <= 0) {
      c.fail_value(name, t, "strides must be positive (no expanded / broadcast dimensions)");
    }
  }
}

/// Checks key_cache / value_cache (same shape, dtype and strides, on ref's device) and returns
/// their KvCacheArgs: pointers, extents and element strides (0 where the extent is 1). The
/// launchers check the rest (head_dim, 16-byte strides, one-to-one layouts for writers).
inline KvCacheArgs kv_cache_args(const ArgChecker& c, const at::Tensor& key_cache,
                                 const at::Tensor& value_cache, const at::Tensor& ref,
                                 const char* ref_name) {
  check_cache_layout(c, "key_cache", key_cache, ref, ref_name);
  check_cache_layout(c, "value_cache", value_cache, ref, ref_name);
  c.same_dtype("value_cache", value_cache, key_cache, "key_cache");
  if (value_cache.sizes() != key_cache.sizes()) {
    c.fail_value("value_cache", value_cache, "must have the shape of key_cache");
  }
  for (std::int64_t d = 0; d < 4; ++d) {
    if (view_stride(value_cache, d) != view_stride(key_cache, d)) {
      c.fail_value("value_cache", value_cache,
                   "must have the strides of key_cache (one layout describes both)");
    }
  }
  KvCacheArgs a;
  a.k = key_cache.data_ptr();
  a.v = value_cache.data_ptr();
  a.num_blocks = c.to_int("key_cache.size(0)", key_cache.size(0));
  a.block_size = c.to_int("key_cache.size(1)", key_cache.size(1));
  a.num_kv_heads = c.to_int("key_cache.size(2)", key_cache.size(2));
  a.head_dim = c.to_int("key_cache.size(3)", key_cache.size(3));
  a.block_stride = view_stride(key_cache, 0);
  a.token_stride = view_stride(key_cache, 1);
  a.head_stride = view_stride(key_cache, 2);
  return a;
}

/// Checks rows [n, heads, head_dim] whose heads are dense (stride(2) == 1, stride(1) == head_dim)
/// and whose rows may lie further apart (a slice of a wider, fused tensor); returns the row
/// stride in elements (0 = dense).
inline std::int64_t dense_head_rows(const ArgChecker& c, const char* name, const at::Tensor& t,
                                    const char* layout) {
  c.dim(name, t, 3, layout);
  const std::int64_t row_elems = t.size(1) * t.size(2);
  if ((t.size(2) > 1 && t.stride(2) != 1) || (t.size(1) > 1 && t.stride(1) != t.size(2)) ||
      (t.size(0) > 1 && t.stride(0) < row_elems)) {
    c.fail_value(name, t,
                 "must have dense heads (stride(2) == 1, stride(1) == size(2)) and rows at "
                 "least size(1) * size(2) apart (a row slice of a fused tensor is fine)");
  }
  return t.size(0) > 1 ? t.stride(0) : 0;
}

/// Checks an attention op's query (float / half / bf16 rows [rows, num_q_heads, head_dim] with
/// dense heads, `layout` naming the shape) and the caches it reads (its dtype and head_dim, a
/// kv-head count that divides num_q_heads); returns the caches' KvCacheArgs and sets
/// q_row_stride (dense_head_rows).
inline KvCacheArgs check_query_and_caches(const ArgChecker& c, const at::Tensor& query,
                                          const at::Tensor& key_cache,
                                          const at::Tensor& value_cache, const char* layout,
                                          std::int64_t& q_row_stride) {
  c.cuda("query", query);
  c.dtype_in("query", query, {at::kFloat, at::kHalf, at::kBFloat16});
  q_row_stride = dense_head_rows(c, "query", query, layout);
  const KvCacheArgs cache = kv_cache_args(c, key_cache, value_cache, query, "query");
  c.same_dtype("key_cache", key_cache, query, "query");
  c.size("key_cache", key_cache, 3, query.size(2), "(head_dim of query)");
  const std::int64_t num_kv_heads = key_cache.size(2);
  if (num_kv_heads < 1 || query.size(1) % num_kv_heads != 0) {
    c.fail_value("key_cache", key_cache,
                 "size(2) (num_kv_heads) must be >= 1 and divide query.size(1) = " +
                     std::to_string(query.size(1)) + " (num_q_heads)");
  }
  return cache;
}

/// Checks the optional outputs of an attention op over `query`'s rows: `out` (query's dtype and
/// shape, dense heads; allocated like query when absent), `lse` (float [rows, num_q_heads],
/// contiguous; `lse_shape` names it) and `scale` (finite, > 0). Returns out's row stride.
inline std::int64_t check_attention_outputs(const ArgChecker& c, const at::Tensor& query,
                                            std::optional<at::Tensor>& out,
                                            const std::optional<at::Tensor>& lse,
                                            std::optional<double> scale, const char* layout,
                                            const char* lse_shape) {
  std::int64_t out_row_stride = 0;
  if (out.has_value()) {
    c.cuda("out", *out, query);
    c.same_dtype("out", *out, query, "query");
    c.shape("out", *out, query.sizes().vec(), "(the shape of query)");
    out_row_stride = dense_head_rows(c, "out", *out, layout);
  } else {
    out = at::empty(query.sizes(), query.options());
  }
  if (lse.has_value()) {
    c.cuda("lse", *lse, query);
    c.dtype("lse", *lse, at::kFloat);
    c.shape("lse", *lse, {query.size(0), query.size(1)}, lse_shape);
    c.contiguous("lse", *lse);
  }
  if (scale.has_value()) {
    c.expect(std::isfinite(*scale) && *scale > 0,
             "scale = " + std::to_string(*scale) +
                 ": must be finite and > 0 (omit it for 1 / sqrt(head_dim))");
  }
  return out_row_stride;
}

/// An optional host-known bound (max_context_len): -1 when absent, else in [0, 2^31).
inline int optional_bound(const ArgChecker& c, const char* name,
                          std::optional<std::int64_t> value) {
  if (!value.has_value()) return -1;
  c.expect(*value >= 0 && *value <= std::numeric_limits<int>::max(),
           std::string(name) + " = " + std::to_string(*value) + ": must be in [0, 2^31)");
  return static_cast<int>(*value);
}

}  // namespace radix_attention_torch
