// paged_prefill over tensors: a varlen batch of query rows (qo_indptr CSR) attending to each
// request's paged context, causal aligned to the end. Checks every tensor argument, runs on the
// tensors' device and on its current CUDA stream, and returns `out`.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "kv_tensors.hpp"
#include "launch.hpp"
#include "tensor_checks.hpp"

namespace py = pybind11;

namespace radix_attention_torch {
namespace {

at::Tensor paged_prefill_py(const at::Tensor& query, const at::Tensor& key_cache,
                            const at::Tensor& value_cache, const at::Tensor& qo_indptr,
                            const at::Tensor& block_tables, const at::Tensor& context_lens,
                            std::optional<std::int64_t> max_q_len, std::optional<at::Tensor> out,
                            std::optional<at::Tensor> lse, std::optional<double> scale, bool causal,
                            std::optional<std::int64_t> max_context_len, bool allow_wgmma) {
  const ArgChecker c("paged_prefill");
  std::int64_t q_row_stride = 0;
  const KvCacheArgs cache = check_query_and_caches(
      c, query, key_cache, value_cache, "[total_q, num_q_heads, head_dim]", q_row_stride);

  c.cuda("qo_indptr", qo_indptr, query);
  c.dtype("qo_indptr", qo_indptr, at::kInt);
  c.dim("qo_indptr", qo_indptr, 1, "[num_seqs + 1]");
  c.contiguous("qo_indptr", qo_indptr);
  if (qo_indptr.size(0) < 1)
    c.fail_value("qo_indptr", qo_indptr, "needs num_seqs + 1 >= 1 entries");
  const std::int64_t num_seqs = qo_indptr.size(0) - 1;

  c.cuda("block_tables", block_tables, query);
  c.dtype("block_tables", block_tables, at::kInt);
  c.dim("block_tables", block_tables, 2, "[num_seqs, max_blocks_per_seq]");
  c.size("block_tables", block_tables, 0, num_seqs, "(num_seqs, qo_indptr.size(0) - 1)");
  if (block_tables.size(1) < 1) c.fail_value("block_tables", block_tables, "needs >= 1 column");
  if (block_tables.stride(1) != 1 ||
      (block_tables.size(0) > 1 && block_tables.stride(0) < block_tables.size(1))) {
    c.fail_value("block_tables", block_tables,
                 "rows must be unit-stride and not overlap (stride(1) == 1, stride(0) >= size(1))");
  }
  c.cuda("context_lens", context_lens, query);
  c.dtype("context_lens", context_lens, at::kInt);
  c.shape("context_lens", context_lens, {num_seqs}, "([num_seqs])");
  c.contiguous("context_lens", context_lens);

  const std::int64_t total_q = query.size(0);
  const std::int64_t out_row_stride = check_attention_outputs(
      c, query, out, lse, scale, "[total_q, num_q_heads, head_dim]", "([total_q, num_q_heads])");

  const c10::cuda::CUDAGuard guard(query.device());
  std::int64_t rows = 0;
  if (max_q_len.has_value()) {
    rows = *max_q_len;
    c.expect(rows >= 0 && rows <= total_q,
             "max_q_len = " + std::to_string(rows) +
                 ": must be in [0, query.size(0) = " + std::to_string(total_q) + "]");
  } else if (num_seqs > 0 && total_q > 0) {
    // Not given: read it from the device (one synchronisation).
    rows = (qo_indptr.slice(0, 1) - qo_indptr.slice(0, 0, num_seqs)).max().item<std::int64_t>();
    c.expect(rows >= 0 && rows <= total_q,
             "qo_indptr: a request has " + std::to_string(rows) +
                 " rows, outside [0, query.size(0) = " + std::to_string(total_q) + "]");
  }

  PrefillArgs a;
  a.dtype = to_dtype(query.scalar_type());
  a.q = query.data_ptr();
  a.total_q = c.to_int("query.size(0)", total_q);
  a.num_q_heads = c.to_int("query.size(1)", query.size(1));
  a.q_row_stride = q_row_stride;
  a.qo_indptr = qo_indptr.data_ptr<std::int32_t>();
  a.max_q_len = static_cast<int>(rows);
  a.cache = cache;
  a.block_tables = block_tables.data_ptr<std::int32_t>();
  a.context_lens = context_lens.data_ptr<std::int32_t>();
  a.num_seqs = c.to_int("num_seqs", num_seqs);
  a.max_blocks_per_seq = c.to_int("block_tables.size(1)", block_tables.size(1));
  a.row_stride = block_tables.size(0) > 1 ? block_tables.stride(0) : block_tables.size(1);
  a.max_context_len = optional_bound(c, "max_context_len", max_context_len);
  a.out = out->data_ptr();
  a.out_row_stride = out_row_stride;
  a.lse = lse.has_value() ? lse->data_ptr<float>() : nullptr;
  a.scale = scale.has_value() ? static_cast<float>(*scale) : 0.f;
  a.causal = causal;
  a.allow_wgmma = allow_wgmma;
  a.stream = at::cuda::getCurrentCUDAStream(query.device().index()).stream();
  paged_prefill(a);
  return *out;
}

}  // namespace

void bind_prefill(py::module_& m) {
  m.def("paged_prefill", &paged_prefill_py, py::arg("query"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("qo_indptr"), py::arg("block_tables"),
        py::arg("context_lens"), py::kw_only(), py::arg("max_q_len") = py::none(),
        py::arg("out") = py::none(), py::arg("lse") = py::none(), py::arg("scale") = py::none(),
        py::arg("causal") = true, py::arg("max_context_len") = py::none(),
        py::arg("allow_wgmma") = true,
        R"doc(Prefill / extend attention over a paged KV cache for a varlen batch.

Request s owns query rows [qo_indptr[s], qo_indptr[s + 1]) (q_len rows) and a context of
kv_len = context_lens[s] tokens: its cached prefix plus the new tokens, whose K/V must already
be in the cache (kv_append). Row i of the request sees keys [0, kv_len - q_len + i + 1) with
causal=True (causal aligned to the end: q_len = 1 is plain decode), all kv_len keys with
causal=False. Query head h reads kv head h // (num_q_heads // num_kv_heads) (GQA / MQA). A row
that sees no key gets out = 0, lse = -inf. Float accumulation; 16-bit inputs on tensor cores.

Args:
  query: [total_q, num_q_heads, head_dim] float32 / float16 / bfloat16, CUDA; heads dense
    (stride(2) == 1, stride(1) == head_dim), rows may be further apart (a slice of a fused QKV
    projection); 16-byte aligned rows.
  key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim], query's dtype, unit
    stride along head_dim and any other strides that are multiples of 16 bytes, the same for
    both: NHD contiguous, HND as hnd.transpose(1, 2), or kv[:, 0] / kv[:, 1] of a combined
    [num_blocks, 2, block_size, num_kv_heads, head_dim] tensor. head_dim in {64, 128, 256}.
  qo_indptr: int32 [num_seqs + 1], from 0, non-decreasing, qo_indptr[-1] <= total_q (rows past
    it are not written). Not checked on the device.
  block_tables: int32 [num_seqs, max_blocks_per_seq] (rows may be strided, unit stride within
    a row); entries a context uses must be valid block ids (not checked on the device).
  context_lens: int32 [num_seqs], each in [0, max_blocks_per_seq * block_size].
  max_q_len: host-known bound of the requests' row counts; omitted: read from qo_indptr (one
    device synchronisation).
  out: optional output like query (rows may be strided); allocated when omitted.
  lse: optional float32 [total_q, num_q_heads], receives the natural-log log-sum-exp.
  scale: softmax scale, > 0; default 1 / sqrt(head_dim).
  causal: the end-aligned causal mask (default) or none.
  max_context_len: optional host-known bound of context_lens.
  allow_wgmma: use the Hopper wgmma kernels where the GPU runs an sm_90a image.
Returns: out. Runs on the current CUDA stream of query's device.)doc");
}

}  // namespace radix_attention_torch
