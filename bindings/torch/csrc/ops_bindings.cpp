// Tensor-level kernels: paged_decode, radix_decode, merge_states. Each checks every tensor
// argument (device, dtype, shape, strides), runs on the tensors' device and on its current CUDA
// stream, takes its split-KV workspace from torch's caching allocator, and returns `out`.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cmath>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "kv_tensors.hpp"
#include "launch.hpp"
#include "radix_batch.hpp"
#include "tensor_checks.hpp"

namespace py = pybind11;

namespace radix_attention_torch {
namespace {

/// Checks query, the caches, out and lse, and fills the dtype / shape / pointer / stride fields
/// of DecodeArgs (everything but the block tables). Allocates `out` when not given. query and
/// out may be row slices of wider tensors (dense heads, rows further apart: q of a fused QKV
/// projection, a tensor-parallel rank's heads), the caches any layout kv_cache_args takes.
DecodeArgs check_decode_common(const ArgChecker& c, const at::Tensor& query,
                               const at::Tensor& key_cache, const at::Tensor& value_cache,
                               std::optional<at::Tensor>& out, const std::optional<at::Tensor>& lse,
                               std::optional<double> scale) {
  std::int64_t q_row_stride = 0;
  const KvCacheArgs cache = check_query_and_caches(
      c, query, key_cache, value_cache, "[num_seqs, num_q_heads, head_dim]", q_row_stride);
  const std::int64_t out_row_stride = check_attention_outputs(
      c, query, out, lse, scale, "[num_seqs, num_q_heads, head_dim]", "([num_seqs, num_q_heads])");

  DecodeArgs a;
  a.dtype = to_dtype(query.scalar_type());
  a.q = query.data_ptr();
  a.num_seqs = c.to_int("query.size(0)", query.size(0));
  a.num_q_heads = c.to_int("query.size(1)", query.size(1));
  a.q_row_stride = q_row_stride;
  a.k = cache.k;
  a.v = cache.v;
  a.num_blocks = cache.num_blocks;
  a.block_size = cache.block_size;
  a.num_kv_heads = cache.num_kv_heads;
  a.head_dim = cache.head_dim;
  a.block_stride = cache.block_stride;
  a.token_stride = cache.token_stride;
  a.head_stride = cache.head_stride;
  a.out = out->data_ptr();
  a.out_row_stride = out_row_stride;
  a.lse = lse.has_value() ? lse->data_ptr<float>() : nullptr;
  a.scale = scale.has_value() ? static_cast<float>(*scale) : 0.f;
  return a;
}

/// block_tables: int32 [num_seqs, max_blocks_per_seq], unit stride along a row (rows may be
/// strided, e.g. a column slice of a wider table); context_lens: int32 [num_seqs], contiguous.
void check_tables(const ArgChecker& c, const at::Tensor& query, const at::Tensor& block_tables,
                  const at::Tensor& context_lens, DecodeArgs& a) {
  c.cuda("block_tables", block_tables, query);
  c.dtype("block_tables", block_tables, at::kInt);
  c.dim("block_tables", block_tables, 2, "[num_seqs, max_blocks_per_seq]");
  c.size("block_tables", block_tables, 0, query.size(0), "(num_seqs, query.size(0))");
  if (block_tables.size(1) < 1) c.fail_value("block_tables", block_tables, "needs >= 1 column");
  if (block_tables.stride(1) != 1 || block_tables.stride(0) < block_tables.size(1)) {
    c.fail_value("block_tables", block_tables,
                 "rows must be unit-stride and not overlap (stride(1) == 1, stride(0) >= size(1))");
  }
  c.cuda("context_lens", context_lens, query);
  c.dtype("context_lens", context_lens, at::kInt);
  c.shape("context_lens", context_lens, {query.size(0)}, "([num_seqs])");
  c.contiguous("context_lens", context_lens);
  a.block_tables = block_tables.data_ptr<std::int32_t>();
  a.context_lens = context_lens.data_ptr<std::int32_t>();
  a.max_blocks_per_seq = c.to_int("block_tables.size(1)", block_tables.size(1));
  a.row_stride = block_tables.stride(0);
}

at::Tensor workspace(std::size_t bytes, const at::Tensor& like) {
  // The caching allocator returns 512-byte aligned blocks (the launchers need 16).
  return at::empty({static_cast<std::int64_t>(bytes)}, like.options().dtype(at::kByte));
}

at::Tensor paged_decode_py(const at::Tensor& query, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const at::Tensor& block_tables,
                           const at::Tensor& context_lens, std::optional<at::Tensor> out,
                           std::optional<at::Tensor> lse, std::optional<double> scale,
                           std::int64_t num_splits, std::optional<std::int64_t> max_context_len) {
  const ArgChecker c("paged_decode");
  DecodeArgs a = check_decode_common(c, query, key_cache, value_cache, out, lse, scale);
  check_tables(c, query, block_tables, context_lens, a);
  c.expect(num_splits >= 0 && num_splits <= 128,
           "num_splits = " + std::to_string(num_splits) + ": must be in [0, 128] (0 = automatic)");
  a.num_splits = static_cast<int>(num_splits);
  a.max_context_len = optional_bound(c, "max_context_len", max_context_len);
  const c10::cuda::CUDAGuard guard(query.device());
  a.stream = at::cuda::getCurrentCUDAStream(query.device().index()).stream();
  const std::size_t bytes = paged_decode_workspace(a);
  at::Tensor ws = bytes > 0 ? workspace(bytes, query) : at::Tensor();
  paged_decode(a, bytes > 0 ? ws.data_ptr() : nullptr, bytes);
  return *out;
}

at::Tensor radix_decode_py(const at::Tensor& query, const at::Tensor& key_cache,
                           const at::Tensor& value_cache, const RadixBatch& batch,
                           std::optional<at::Tensor> out, std::optional<at::Tensor> lse,
                           std::optional<double> scale, bool fixed_grid) {
  const ArgChecker c("radix_decode");
  if (!batch.valid()) {
    throw radix_attention::StateError(
        "radix_decode: batch: its device plan was overwritten by a later BatchPlanner.plan() "
        "call (the planner keeps num_plan_buffers plans alive); plan the batch again");
  }
  DecodeArgs a = check_decode_common(c, query, key_cache, value_cache, out, lse, scale);
  check_tables(c, query, batch.block_tables, batch.context_lens, a);
  const PlanShape& s = batch.shape;
  c.expect(a.num_q_heads == s.num_q_heads && a.num_kv_heads == s.num_kv_heads &&
               a.head_dim == s.head_dim,
           "query / key_cache heads (" + std::to_string(a.num_q_heads) + " q, " +
               std::to_string(a.num_kv_heads) + " kv, head_dim " + std::to_string(a.head_dim) +
               ") differ from the BatchPlanner's (" + std::to_string(s.num_q_heads) + " q, " +
               std::to_string(s.num_kv_heads) + " kv, head_dim " + std::to_string(s.head_dim) +
               ")");
  c.expect(a.block_size == s.block_size, "key_cache.size(1) = " + std::to_string(a.block_size) +
                                             ": must equal the batch's block_size " +
                                             std::to_string(s.block_size));
  a.max_context_len = batch.max_context_len;

  const c10::cuda::CUDAGuard guard(query.device());
  const c10::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream(query.device().index());
  a.stream = stream.stream();
  // The plan and the tables were copied on the planner's stream: order this launch after them.
  if (batch.slot->stream != a.stream) batch.slot->uploaded.block(stream);
  const std::size_t bytes = radix_decode_workspace(batch.slot->plan, a.num_q_heads, a.head_dim);
  at::Tensor ws = bytes > 0 ? workspace(bytes, query) : at::Tensor();
  radix_decode(a, batch.slot->plan, bytes > 0 ? ws.data_ptr() : nullptr, bytes, fixed_grid);
  return *out;
}

at::Tensor merge_states_py(const at::Tensor& partial_out, const at::Tensor& partial_lse,
                           const at::Tensor& query_partial_indptr, const at::Tensor& query_partials,
                           std::optional<at::Tensor> out, std::optional<at::Tensor> lse_out,
                           std::optional<at::ScalarType> out_dtype) {
  const ArgChecker c("merge_states");
  c.cuda("partial_out", partial_out);
  c.dtype("partial_out", partial_out, at::kFloat);
  c.dim("partial_out", partial_out, 3, "[num_partials, num_heads, head_dim]");
  c.contiguous("partial_out", partial_out);
  c.cuda("partial_lse", partial_lse, partial_out, "partial_out");
  c.dtype("partial_lse", partial_lse, at::kFloat);
  c.shape("partial_lse", partial_lse, {partial_out.size(0), partial_out.size(1)},
          "([num_partials, num_heads])");
  c.contiguous("partial_lse", partial_lse);
  c.cuda("query_partial_indptr", query_partial_indptr, partial_out, "partial_out");
  c.dtype("query_partial_indptr", query_partial_indptr, at::kInt);
  c.dim("query_partial_indptr", query_partial_indptr, 1, "[num_queries + 1]");
  c.contiguous("query_partial_indptr", query_partial_indptr);
  if (query_partial_indptr.size(0) < 1) {
    c.fail_value("query_partial_indptr", query_partial_indptr,
                 "needs num_queries + 1 >= 1 entries");
  }
  c.cuda("query_partials", query_partials, partial_out, "partial_out");
  c.dtype("query_partials", query_partials, at::kInt);
  c.dim("query_partials", query_partials, 1, "[num_entries]");
  c.contiguous("query_partials", query_partials);
  const std::int64_t num_queries = query_partial_indptr.size(0) - 1;
  const std::vector<std::int64_t> out_shape{num_queries, partial_out.size(1), partial_out.size(2)};
  if (out.has_value()) {
    c.cuda("out", *out, partial_out, "partial_out");
    c.dtype_in("out", *out, {at::kFloat, at::kHalf, at::kBFloat16});
    if (out_dtype.has_value()) c.dtype("out", *out, *out_dtype);
    c.shape("out", *out, out_shape, "([num_queries, num_heads, head_dim])");
    c.contiguous("out", *out);
  } else {
    const at::ScalarType dt = out_dtype.value_or(at::kFloat);
    if (dt != at::kFloat && dt != at::kHalf && dt != at::kBFloat16) {
      throw ArgumentTypeError(std::string("merge_states: out_dtype = ") + c10::toString(dt) +
                              ": must be torch.float32, torch.float16 or torch.bfloat16");
    }
    out = at::empty(out_shape, partial_out.options().dtype(dt));
  }
  if (lse_out.has_value()) {
    c.cuda("lse_out", *lse_out, partial_out, "partial_out");
    c.dtype("lse_out", *lse_out, at::kFloat);
    c.shape("lse_out", *lse_out, {num_queries, partial_out.size(1)}, "([num_queries, num_heads])");
    c.contiguous("lse_out", *lse_out);
  }
  MergeArgs m;
  m.out_dtype = to_dtype(out->scalar_type());
  m.partial_out = partial_out.data_ptr<float>();
  m.partial_lse = partial_lse.data_ptr<float>();
  m.num_partials = c.to_int("partial_out.size(0)", partial_out.size(0));
  m.num_heads = c.to_int("partial_out.size(1)", partial_out.size(1));
  m.head_dim = c.to_int("partial_out.size(2)", partial_out.size(2));
  m.query_partial_indptr = query_partial_indptr.data_ptr<std::int32_t>();
  m.query_partials = query_partials.data_ptr<std::int32_t>();
  m.num_queries = c.to_int("num_queries", num_queries);
  m.out = out->data_ptr();
  m.lse_out = lse_out.has_value() ? lse_out->data_ptr<float>() : nullptr;
  const c10::cuda::CUDAGuard guard(partial_out.device());
  m.stream = at::cuda::getCurrentCUDAStream(partial_out.device().index()).stream();
  merge_states(m);
  return *out;
}

}  // namespace

void bind_ops(py::module_& m) {
  m.def("paged_decode", &paged_decode_py, py::arg("query"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("block_tables"), py::arg("context_lens"), py::kw_only(),
        py::arg("out") = py::none(), py::arg("lse") = py::none(), py::arg("scale") = py::none(),
        py::arg("num_splits") = 0, py::arg("max_context_len") = py::none(),
        R"doc(Decode attention: one query token per sequence over its paged KV cache.

out[s, h] = softmax(scale * query[s, h] . K_s^T) V_s over the tokens [0, context_lens[s]) of
sequence s, with kv head h // (num_q_heads // num_kv_heads) (GQA / MQA). Float accumulation.
A sequence with context length 0 gets out = 0 and lse = -inf.

Args:
  query: [num_seqs, num_q_heads, head_dim] float32 / float16 / bfloat16, CUDA; heads dense
    (stride(2) == 1, stride(1) == head_dim), rows may lie further apart (a slice of a fused
    QKV projection, or of a tensor-parallel rank's heads: query[:, h0:h1]); 16-byte multiples.
  key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim], query's dtype and
    device, unit stride along head_dim, the same strides for both: NHD, HND as
    hnd.transpose(1, 2), the halves of a combined [blocks, 2, block, heads, dim] tensor, or a
    slice of kv heads (key_cache[:, :, k0:k1]). head_dim in {64, 128, 256}.
  block_tables: int32 [num_seqs, max_blocks_per_seq] (rows may be strided, unit stride within a
    row). Entries a context uses must be valid block ids (not checked on the device; see
    validate_block_tables).
  context_lens: int32 [num_seqs], each in [0, max_blocks_per_seq * block_size].
  out: optional output, query's shape and dtype, dense heads, rows possibly further apart
    (nothing between rows is written); allocated (contiguous) when omitted.
  lse: optional float32 [num_seqs, num_q_heads], receives the natural-log log-sum-exp.
  scale: softmax scale, > 0; default 1 / sqrt(head_dim).
  num_splits: split-KV factor, 0 = automatic from batch x kv heads vs the SM count.
  max_context_len: optional host-known bound of context_lens (sizes the split-KV plan).
Returns: out. Runs on the current CUDA stream of query's device.)doc");

  m.def("radix_decode", &radix_decode_py, py::arg("query"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("batch"), py::kw_only(), py::arg("out") = py::none(),
        py::arg("lse") = py::none(), py::arg("scale") = py::none(), py::arg("fixed_grid") = false,
        R"doc(Shared-prefix (radix) decode attention over a batch planned by BatchPlanner.

Computes exactly what paged_decode computes for the batch's rows (row q of query is the new
token of batch.seqs[q]), but reads every chunk of KV shared by several queries once for all
of them, then merges each query's partial states.

Args:
  query: [batch.num_queries, num_q_heads, head_dim], the planner's head counts.
  key_cache, value_cache: as in paged_decode; block_size must be the batch's.
  batch: a RadixBatch from BatchPlanner.plan / plan_tables (still valid: the planner reuses
    its device-plan buffers after num_plan_buffers later plans).
  out, lse, scale: as in paged_decode.
  fixed_grid: launch a persistent grid that reads the work count on the device (for CUDA graph
    capture).
Returns: out. Runs on the current CUDA stream, ordered after the plan's upload.)doc");

  m.def("merge_states", &merge_states_py, py::arg("partial_out"), py::arg("partial_lse"),
        py::arg("query_partial_indptr"), py::arg("query_partials"), py::kw_only(),
        py::arg("out") = py::none(), py::arg("lse_out") = py::none(),
        py::arg("out_dtype") = py::none(),
        R"doc(Exact merge of partial attention states (split-KV / cascade).

For query i, the partials query_partials[query_partial_indptr[i]:query_partial_indptr[i+1]]
(disjoint token ranges of the same query) combine as out = sum_p exp(lse_p - lse) * out_p with
lse = log(sum_p exp(lse_p)). LSE is the NATURAL log (FlashInfer's is base 2). A partial with
lse = -inf is empty; a query without non-empty partials gets out = 0 and lse = -inf.

Args:
  partial_out: float32 [num_partials, num_heads, head_dim], CUDA, contiguous.
  partial_lse: float32 [num_partials, num_heads].
  query_partial_indptr: int32 [num_queries + 1], non-decreasing.
  query_partials: int32 partial ids in [0, num_partials) (not checked on the device).
  out: optional [num_queries, num_heads, head_dim] float32 / float16 / bfloat16.
  lse_out: optional float32 [num_queries, num_heads].
  out_dtype: dtype of the allocated out (default float32).
Returns: out.)doc");
}

}  // namespace radix_attention_torch
