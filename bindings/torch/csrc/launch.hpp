#pragma once
/// @file
/// The boundary between the torch-facing C++ (argument checks, tensors, streams; compiled by the
/// host compiler) and the kernel launches (compiled by nvcc, one file per element type). Only
/// raw pointers, extents and a cudaStream_t cross it, so the .cu files never parse ATen and the
/// kernels' template instances build in parallel.

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace radix_attention {
class DeviceRadixPlan;
}

namespace radix_attention_torch {

/// Element type of query / KV cache / output.
enum class DType { kFloat, kHalf, kBFloat16 };

/// Everything a decode launch needs, already checked on the torch side.
struct DecodeArgs {
  DType dtype = DType::kBFloat16;
  const void* q = nullptr;  ///< [num_seqs, num_q_heads, head_dim]
  int num_seqs = 0;
  int num_q_heads = 0;
  const void* k = nullptr;  ///< [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v = nullptr;
  int num_blocks = 0;
  int block_size = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  const std::int32_t* block_tables = nullptr;  ///< [num_seqs, row_stride]
  const std::int32_t* context_lens = nullptr;  ///< [num_seqs]
  int max_blocks_per_seq = 0;
  std::int64_t row_stride = 0;
  int max_context_len = -1;  ///< host-known bound, -1 = unknown
  void* out = nullptr;       ///< [num_seqs, num_q_heads, head_dim]
  float* lse = nullptr;      ///< [num_seqs, num_q_heads] or null
  float scale = 0.f;         ///< 0 = 1 / sqrt(head_dim)
  int num_splits = 0;        ///< paged_decode only; 0 = automatic
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
}  // namespace typed

}  // namespace radix_attention_torch
