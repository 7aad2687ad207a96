// Host utilities: validate_block_tables, the float64 CPU reference of paged decode, and the
// head ranges of tensor parallelism.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/head_range.hpp"
#include "radix_attention/reference/attention.hpp"
#include "tensor_checks.hpp"

namespace py = pybind11;
namespace ra = radix_attention;

namespace radix_attention_torch {
namespace {

void check_tables_host(const ArgChecker& c, const at::Tensor& block_tables,
                       const at::Tensor& context_lens) {
  c.dtype("block_tables", block_tables, at::kInt);
  c.dim("block_tables", block_tables, 2, "[num_seqs, max_blocks_per_seq]");
  c.dtype("context_lens", context_lens, at::kInt);
  c.shape("context_lens", context_lens, {block_tables.size(0)}, "([num_seqs])");
}

void validate_block_tables_py(const at::Tensor& block_tables, const at::Tensor& context_lens,
                              std::int64_t num_blocks, std::int64_t block_size) {
  const ArgChecker c("validate_block_tables");
  check_tables_host(c, block_tables, context_lens);
  const at::Tensor bt = block_tables.to(at::kCPU).contiguous();
  const at::Tensor cl = context_lens.to(at::kCPU).contiguous();
  ra::validate_block_tables(bt.data_ptr<std::int32_t>(), bt.size(1), cl.data_ptr<std::int32_t>(),
                            c.to_int("num_seqs", bt.size(0)),
                            c.to_int("block_tables.size(1)", bt.size(1)),
                            c.to_int("block_size", block_size), num_blocks);
}

py::tuple reference_paged_decode_py(const at::Tensor& query, const at::Tensor& key_cache,
                                    const at::Tensor& value_cache, const at::Tensor& block_tables,
                                    const at::Tensor& context_lens, std::optional<double> scale) {
  const ArgChecker c("reference_paged_decode");
  c.dim("query", query, 3, "[num_seqs, num_q_heads, head_dim]");
  c.dim("key_cache", key_cache, 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  if (value_cache.sizes() != key_cache.sizes()) {
    c.fail_value("value_cache", value_cache, "must have the shape of key_cache");
  }
  c.size("key_cache", key_cache, 3, query.size(2), "(head_dim of query)");
  check_tables_host(c, block_tables, context_lens);
  c.size("block_tables", block_tables, 0, query.size(0), "(num_seqs, query.size(0))");
  // float32 holds float16 / bfloat16 / float32 inputs exactly; the sums run in float64.
  const at::Tensor q = query.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor k = key_cache.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor v = value_cache.to(at::kCPU, at::kFloat).contiguous();
  const at::Tensor bt = block_tables.to(at::kCPU).contiguous();
  const at::Tensor cl = context_lens.to(at::kCPU).contiguous();
  const int num_seqs = c.to_int("query.size(0)", q.size(0));
  const int num_q_heads = c.to_int("query.size(1)", q.size(1));
  const int block_size = c.to_int("key_cache.size(1)", k.size(1));
  ra::validate_block_tables(bt.data_ptr<std::int32_t>(), bt.size(1), cl.data_ptr<std::int32_t>(),
                            num_seqs,
                            c.to_int("block_tables.size(1)", std::max<std::int64_t>(bt.size(1), 1)),
                            block_size, k.size(0));
  ra::reference::HostPagedCache<float> cache;
  cache.k = k.data_ptr<float>();
  cache.v = v.data_ptr<float>();
  cache.num_blocks = k.size(0);
  cache.block_size = block_size;
  cache.num_kv_heads = c.to_int("key_cache.size(2)", k.size(2));
  cache.head_dim = c.to_int("key_cache.size(3)", k.size(3));
  const double s = scale.value_or(1.0 / std::sqrt(static_cast<double>(cache.head_dim)));
  at::Tensor out = at::empty({q.size(0), q.size(1), q.size(2)}, at::kDouble);
  at::Tensor lse = at::empty({q.size(0), q.size(1)}, at::kDouble);
  ra::reference::paged_decode(q.data_ptr<float>(), cache, bt.data_ptr<std::int32_t>(), bt.size(1),
                              cl.data_ptr<std::int32_t>(), num_seqs, num_q_heads, s,
                              out.data_ptr<double>(), lse.data_ptr<double>());
  return py::make_tuple(out, lse);
}

py::tuple tensor_parallel_heads_py(std::int64_t num_q_heads, std::int64_t num_kv_heads,
                                   std::int64_t tp_size, std::int64_t rank) {
  const ArgChecker c("tensor_parallel_heads");
  const ra::TensorParallelHeads h = ra::tensor_parallel_heads(
      c.to_int("num_q_heads", num_q_heads), c.to_int("num_kv_heads", num_kv_heads),
      c.to_int("tp_size", tp_size), c.to_int("rank", rank));
  return py::make_tuple(py::make_tuple(h.q.first, h.q.count),
                        py::make_tuple(h.kv.first, h.kv.count));
}

}  // namespace

void bind_reference(py::module_& m) {
  m.def("validate_block_tables", &validate_block_tables_py, py::arg("block_tables"),
        py::arg("context_lens"), py::arg("num_blocks"), py::arg("block_size"),
        "Raises InvalidArgument unless every context length fits its row and every block id a "
        "context uses is in [0, num_blocks). int32 tensors, CPU or CUDA (read back: syncs). "
        "The kernels do not check block ids on the device.");
  m.def("reference_paged_decode", &reference_paged_decode_py, py::arg("query"),
        py::arg("key_cache"), py::arg("value_cache"), py::arg("block_tables"),
        py::arg("context_lens"), py::kw_only(), py::arg("scale") = py::none(),
        "The library's float64 CPU reference of paged_decode (any device / float dtype in; "
        "inputs are read as float32): returns (out float64 [S, Hq, D], lse float64 [S, Hq]).");
  m.def("tensor_parallel_heads", &tensor_parallel_heads_py, py::arg("num_q_heads"),
        py::arg("num_kv_heads"), py::arg("tp_size"), py::arg("rank"),
        R"doc(Heads of tensor-parallel rank `rank` of `tp_size`: ((q_first, q_count),
(kv_first, kv_count)). Query heads split evenly; kv heads split evenly when tp_size <=
num_kv_heads, else each kv head is replicated on tp_size // num_kv_heads consecutive ranks.
A rank's attention is then a view: query[:, q_first:q_first + q_count] and
key_cache[:, :, kv_first:kv_first + kv_count] (or the rank's own copies of those heads), with
a BatchPlanner of q_count query and kv_count kv heads (the same batches, so the same plans on
every rank). Raises InvalidArgument (a ValueError) unless num_q_heads is a multiple of
num_kv_heads and of tp_size, tp_size divides num_kv_heads or is a multiple of it, and
0 <= rank < tp_size.)doc");
}

}  // namespace radix_attention_torch
