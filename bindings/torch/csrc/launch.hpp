#pragma once
/// @file
/// The boundary between the torch-facing C++ (argument checks, tensors, streams; compiled by the
/// host compiler) and the kernel launches (compiled by nvcc, one file per element type). Only
/// raw pointers, extents and a cudaStream_t cross it, so the .cu files never parse ATen and the
/// kernels' template instances build in parallel.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "radix_attention/core/views.hpp"

namespace radix_attention {
class DeviceRadixPlan;
}

namespace radix_attention_torch {

/// Element type of query / KV cache / output.
enum class DType { kFloat, kHalf, kBFloat16 };

/// Everything a decode launch needs, already checked on the torch side.
struct DecodeArgs {
  DType dtype = DType::kBFloat16;
  const void* q = nullptr;  ///< [num_seqs rows (q_row_stride apart), num_q_heads, head_dim]
  int num_seqs = 0;
  int num_q_heads = 0;
  std::int64_t q_row_stride = 0;  ///< 0 = dense
  const void* k = nullptr;        ///< [num_blocks, block_size, num_kv_heads, head_dim], strided:
  const void* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::int64_t block_stride = 0;  ///< element strides of k and v; 0 = the NHD default
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
  const std::int32_t* block_tables = nullptr;  ///< [num_seqs, row_stride]
  const std::int32_t* context_lens = nullptr;  ///< [num_seqs]
  int max_blocks_per_seq = 0;
  std::int64_t row_stride = 0;
  int max_context_len = -1;  ///< host-known bound, -1 = unknown
  void* out = nullptr;       ///< [num_seqs rows (out_row_stride apart), num_q_heads, head_dim]
  std::int64_t out_row_stride = 0;  ///< 0 = dense
  float* lse = nullptr;             ///< [num_seqs, num_q_heads] or null
  float scale = 0.f;                ///< 0 = 1 / sqrt(head_dim)
  int num_splits = 0;               ///< paged_decode only; 0 = automatic
  cudaStream_t stream = nullptr;
};

/// Workspace bytes paged_decode needs for `args` (0 = none). Throws the library's errors.
std::size_t paged_decode_workspace(const DecodeArgs& args);
/// Launches paged_decode (and its split-KV merge) on args.stream.
void paged_decode(const DecodeArgs& args, void* workspace, std::size_t workspace_bytes);

/// Workspace bytes radix_decode needs for `plan` with these head counts.
std::size_t radix_decode_workspace(const radix_attention::DeviceRadixPlan& plan, int num_q_heads,
                                   int head_dim);
/// Launches radix_decode (kernel + merge) for an uploaded plan on args.stream.
void radix_decode(const DecodeArgs& args, const radix_attention::DeviceRadixPlan& plan,
                  void* workspace, std::size_t workspace_bytes, bool fixed_grid);

/// Arguments of merge_states (see radix_attention::merge_states).
struct MergeArgs {
  DType out_dtype = DType::kFloat;
  const float* partial_out = nullptr;
  const float* partial_lse = nullptr;
  int num_partials = 0;
  int num_heads = 0;
  int head_dim = 0;
  const std::int32_t* query_partial_indptr = nullptr;
  const std::int32_t* query_partials = nullptr;
  int num_queries = 0;
  void* out = nullptr;
  float* lse_out = nullptr;
  cudaStream_t stream = nullptr;
};

/// Launches merge_states on args.stream.
void merge_states(const MergeArgs& args);

/// A paged KV cache as the launchers see it: K and V [num_blocks, block_size, num_kv_heads,
/// head_dim] addressed through element strides (both tensors share them; see
/// radix_attention::PagedKvCacheView: 0 = the dense NHD default).
struct KvCacheArgs {
  void* k = nullptr;
  void* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  std::int64_t block_stride = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
};

/// The writable library view of `c` with element type T (as_const() gives the read-only one).
template <class T>
radix_attention::PagedKvCacheMutView<T> cache_view_of(const KvCacheArgs& c) {
  radix_attention::PagedKvCacheMutView<T> cache{static_cast<T*>(c.k), static_cast<T*>(c.v),
                                                c.num_blocks,         c.block_size,
                                                c.num_kv_heads,       c.head_dim};
  cache.block_stride = c.block_stride;
  cache.token_stride = c.token_stride;
  cache.head_stride = c.head_stride;
  return cache;
}

/// The library's block-table view of a launch's arguments (DecodeArgs, PrefillArgs).
template <class Args>
radix_attention::BlockTableView table_view(const Args& a) {
  radix_attention::BlockTableView tables;
  tables.block_tables = a.block_tables;
  tables.context_lens = a.context_lens;
  tables.num_seqs = a.num_seqs;
  tables.max_blocks_per_seq = a.max_blocks_per_seq;
  tables.row_stride = a.row_stride;
  tables.max_context_len = a.max_context_len;
  return tables;
}

/// Everything a paged_prefill launch needs, already checked on the torch side.
struct PrefillArgs {
  DType dtype = DType::kBFloat16;
  const void* q = nullptr;  ///< [total_q rows (q_row_stride apart), num_q_heads, head_dim]
  int total_q = 0;
  int num_q_heads = 0;
  std::int64_t q_row_stride = 0;
  const std::int32_t* qo_indptr = nullptr;  ///< [num_seqs + 1]
  int max_q_len = 0;
  KvCacheArgs cache;                           ///< read only here
  const std::int32_t* block_tables = nullptr;  ///< [num_seqs, row_stride]
  const std::int32_t* context_lens = nullptr;  ///< [num_seqs]
  int num_seqs = 0;
  int max_blocks_per_seq = 0;
  std::int64_t row_stride = 0;
  int max_context_len = -1;
  void* out = nullptr;  ///< like q, rows out_row_stride apart
  std::int64_t out_row_stride = 0;
  float* lse = nullptr;  ///< [total_q, num_q_heads] or null
  float scale = 0.f;     ///< 0 = 1 / sqrt(head_dim)
  bool causal = true;
  bool allow_wgmma = true;
  cudaStream_t stream = nullptr;
};

/// Launches paged_prefill on args.stream.
void paged_prefill(const PrefillArgs& args);

/// Element type of a KV cache the writers write: the attention dtypes, or fp8 e4m3.
enum class CacheDType { kFloat, kHalf, kBFloat16, kFp8E4M3 };

/// Arguments of kv_append (see radix_attention::kv_append).
struct KvAppendArgs {
  DType in_dtype = DType::kBFloat16;
  CacheDType cache_dtype = CacheDType::kBFloat16;
  const void* k = nullptr;  ///< [num_tokens, num_kv_heads, head_dim] through the strides below
  const void* v = nullptr;
  int num_tokens = 0;
  std::int64_t token_stride = 0;
  std::int64_t head_stride = 0;
  const std::int32_t* slot_mapping = nullptr;  ///< [num_tokens], negative = padding
  KvCacheArgs cache;
  const float* k_scale = nullptr;  ///< fp8 cache only: 1 or num_kv_heads floats, or null
  const float* v_scale = nullptr;
  bool per_head_scales = false;
  int* nonfinite_count = nullptr;  ///< fp8 cache only
  cudaStream_t stream = nullptr;
};

/// Launches kv_append on args.stream.
void kv_append(const KvAppendArgs& args);

/// Arguments of copy_blocks: `copies` holds num_copies rows of copy_width int32, (src, dst)
/// pairs (width 2) or BlockCopy triples (src, dst, num_tokens; width 3).
struct CopyBlocksArgs {
  CacheDType dtype = CacheDType::kBFloat16;
  KvCacheArgs cache;
  const std::int32_t* copies = nullptr;
  int num_copies = 0;
  int copy_width = 2;
  cudaStream_t stream = nullptr;
};

/// Launches copy_blocks on args.stream.
void copy_blocks(const CopyBlocksArgs& args);

/// Per-dtype instances (defined in the launch_*.cu files); the untyped functions above dispatch.
namespace typed {
template <class T>
std::size_t paged_decode_workspace(const DecodeArgs& args);
template <class T>
void paged_decode(const DecodeArgs& args, void* workspace, std::size_t workspace_bytes);
template <class T>
void radix_decode(const DecodeArgs& args, const radix_attention::DeviceRadixPlan& plan,
                  void* workspace, std::size_t workspace_bytes, bool fixed_grid);
template <class T>
void merge_states(const MergeArgs& args);
template <class T>
void paged_prefill(const PrefillArgs& args);
/// kv_append from T rows into a T cache or (cache_dtype kFp8E4M3) an fp8 e4m3 cache.
template <class T>
void kv_append(const KvAppendArgs& args);
template <class T>
void copy_blocks(const CopyBlocksArgs& args);
/// copy_blocks over an fp8 e4m3 cache (the host compiler never names the fp8 type).
void copy_blocks_fp8(const CopyBlocksArgs& args);
}  // namespace typed

}  // namespace radix_attention_torch
