// The batch planner: RadixPlan (host arrays), plan_batch (host only), and BatchPlanner, which
// plans a batch and puts its block tables and packed plan on the GPU (RadixBatch).
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "host_tensors.hpp"
#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_batch.hpp"
#include "tensor_checks.hpp"

namespace py = pybind11;
namespace ra = radix_attention;

namespace radix_attention_torch {
namespace {

/// Host block tables from CPU or CUDA int32 tensors (a CUDA tensor is copied: it synchronizes).
ra::BlockTables tables_from_tensors(const ArgChecker& c, const at::Tensor& block_tables,
                                    const at::Tensor& context_lens) {
  c.dtype("block_tables", block_tables, at::kInt);
  c.dim("block_tables", block_tables, 2, "[num_seqs, max_blocks_per_seq]");
  c.dtype("context_lens", context_lens, at::kInt);
  c.shape("context_lens", context_lens, {block_tables.size(0)}, "([num_seqs])");
  if (context_lens.device() != block_tables.device()) {
    c.fail_value("context_lens", context_lens, "must be on block_tables' device");
  }
  const at::Tensor bt = block_tables.to(at::kCPU).contiguous();
  const at::Tensor cl = context_lens.to(at::kCPU).contiguous();
  ra::BlockTables t;
  t.num_seqs = c.to_int("block_tables.size(0)", bt.size(0));
  t.max_blocks_per_seq = c.to_int("block_tables.size(1)", bt.size(1));
  t.block_tables.assign(bt.data_ptr<std::int32_t>(), bt.data_ptr<std::int32_t>() + bt.numel());
  t.context_lens.assign(cl.data_ptr<std::int32_t>(), cl.data_ptr<std::int32_t>() + cl.numel());
  return t;
}

std::int32_t element_bytes(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return 4;
    case at::kHalf:
    case at::kBFloat16:
      return 2;
    default:
      throw ArgumentTypeError(std::string("BatchPlanner: dtype = ") + c10::toString(dtype) +
                              ": must be torch.float32, torch.float16 or torch.bfloat16");
  }
}

/**
 * Plans batches and uploads them. Owns a ring of `num_plan_buffers` device plans: a RadixBatch
 * stays usable until that many later plan() calls have reused its buffer (radix_decode then
 * raises StateError instead of reading another batch's plan). Uploads never allocate once the
 * buffers have grown to the largest batch seen.
 */
class BatchPlanner {
 public:
  BatchPlanner(ra::PlannerOptions options, std::optional<std::int32_t> num_sms,
               std::int32_t num_plan_buffers)
      : options_(options), num_sms_(num_sms) {
    ra::detail::check_planner_options(withSms(options_, num_sms_.value_or(132)));
    radix_attention::expects(num_plan_buffers >= 1 && num_plan_buffers <= 64, "num_plan_buffers",
                             num_plan_buffers, "must be in [1, 64]");
    for (std::int32_t i = 0; i < num_plan_buffers; ++i)
      slots_.push_back(std::make_shared<PlanSlot>());
  }

  RadixBatch plan_tables(const ra::BlockTables& tables, std::int32_t block_size,
                         std::optional<at::Device> device_arg, std::vector<std::int64_t> seqs) {
    const at::Device device = resolve_device(device_arg);
    const c10::cuda::CUDAGuard guard(device);
    ra::PlannerOptions options =
        withSms(options_, num_sms_.has_value() ? *num_sms_ : sm_count(device));
    RadixBatch batch;
    batch.plan = ra::plan(tables, block_size, options, &batch.stats);
    batch.shape =
        PlanShape{options.num_q_heads, options.num_kv_heads, options.head_dim, block_size};
    batch.host_context_lens = tables.context_lens;
    batch.max_context_len =
        tables.context_lens.empty()
            ? 0
            : *std::max_element(tables.context_lens.begin(), tables.context_lens.end());
    batch.seqs = std::move(seqs);

    const c10::cuda::CUDAStream stream = at::cuda::getCurrentCUDAStream(device.index());
    std::shared_ptr<PlanSlot>& slot = slots_[next_slot_];
    if (slot->device != -1 && slot->device != device.index()) slot = std::make_shared<PlanSlot>();
    // Tables first: if the upload below throws, the slot and its earlier batch stay as they were.
    // A batch with no rows keeps one padding column so its tensors are valid kernel arguments.
    const std::int32_t columns = std::max(tables.max_blocks_per_seq, 1);
    std::vector<std::int32_t> padded = tables.block_tables;
    if (tables.max_blocks_per_seq == 0)
      padded.assign(static_cast<std::size_t>(tables.num_seqs), -1);
    batch.block_tables = int32_tensor(padded, {tables.num_seqs, columns}, device);
    batch.context_lens = int32_tensor(tables.context_lens, {tables.num_seqs}, device);
    slot->plan.upload(batch.plan, tables.context_lens, options.num_q_heads / options.num_kv_heads,
                      stream.stream());
    slot->uploaded.record(stream);
    slot->stream = stream.stream();
    slot->device = device.index();
    slot->generation = ++generation_;
    batch.slot = slot;
    batch.generation = slot->generation;
    next_slot_ = (next_slot_ + 1) % slots_.size();
    return batch;
  }

  RadixBatch plan_sequences(const ra::SequenceManager& manager,
                            const std::vector<ra::SequenceId>& seqs,
                            std::optional<at::Device> device) {
    const ra::BlockTables tables = manager.export_block_tables(seqs);
    return plan_tables(tables, manager.block_size(), device,
                       std::vector<std::int64_t>(seqs.begin(), seqs.end()));
  }

  ra::PlannerOptions& options() { return options_; }
  std::optional<std::int32_t>& num_sms() { return num_sms_; }
  std::size_t num_plan_buffers() const { return slots_.size(); }

 private:
  static ra::PlannerOptions withSms(ra::PlannerOptions o, std::int32_t sms) {
    o.num_sms = sms;
    return o;
  }

  static at::Device resolve_device(std::optional<at::Device> device) {
    if (!device.has_value()) return at::Device(at::kCUDA, c10::cuda::current_device());
    if (!device->is_cuda()) {
      throw ra::InvalidArgument("BatchPlanner.plan: device = " + device->str() +
                                ": must be a CUDA device (use plan_batch for host-only planning)");
    }
    return device->has_index() ? *device : at::Device(at::kCUDA, c10::cuda::current_device());
  }

  static std::int32_t sm_count(const at::Device& device) {
    return at::cuda::getDeviceProperties(device.index())->multiProcessorCount;
  }

  ra::PlannerOptions options_;
  std::optional<std::int32_t> num_sms_;
  std::vector<std::shared_ptr<PlanSlot>> slots_;
  std::size_t next_slot_ = 0;
  std::uint64_t generation_ = 0;
};

ra::PlannerOptions make_options(std::int32_t num_q_heads, std::int32_t num_kv_heads,
                                std::int32_t head_dim, at::ScalarType dtype, bool enable_sharing,
                                std::int32_t min_chunk_tokens, std::int32_t max_chunk_tokens,
                                std::int32_t chunk_alignment_tokens, std::int32_t rows_per_tile,
                                double segment_overhead_bytes, double merge_launch_bytes) {
  ra::PlannerOptions o;
  o.num_q_heads = num_q_heads;
  o.num_kv_heads = num_kv_heads;
  o.head_dim = head_dim;
  o.kv_element_bytes = element_bytes(dtype);
  o.enable_sharing = enable_sharing;
  o.min_chunk_tokens = min_chunk_tokens;
  o.max_chunk_tokens = max_chunk_tokens;
  o.chunk_alignment_tokens = chunk_alignment_tokens;
  o.rows_per_tile = rows_per_tile;
  o.segment_overhead_bytes = segment_overhead_bytes;
  o.merge_launch_bytes = merge_launch_bytes;
  return o;
}

py::dict stats_dict(const ra::PlanStats& s) {
  py::dict d;
  d["num_shared_segments"] = s.num_shared_segments;
  d["num_private_segments"] = s.num_private_segments;
  d["num_trie_nodes"] = s.num_trie_nodes;
  d["chunk_target_tokens"] = s.chunk_target_tokens;
  d["modelled_bytes"] = s.modelled_bytes;
  d["modelled_bytes_unshared"] = s.modelled_bytes_unshared;
  return d;
}

void bind_plan(py::module_& m) {
  py::class_<ra::RadixPlan>(m, "RadixPlan", R"doc(
A batch's work as flat int32 CSR arrays (see the C++ radix_attention::RadixPlan): chunks
(token range of a block-table row + the queries that attend to it), partials (one per
(chunk, query) pair) and each query's partials to merge.)doc")
      .def_readonly("num_queries", &ra::RadixPlan::num_queries)
      .def_property_readonly("num_chunks", &ra::RadixPlan::num_chunks)
      .def_property_readonly("num_partials", &ra::RadixPlan::num_partials)
      .def_readonly("num_segments", &ra::RadixPlan::num_segments)
      .def_readonly("chunk_row", &ra::RadixPlan::chunk_row)
      .def_readonly("chunk_token_begin", &ra::RadixPlan::chunk_token_begin)
      .def_readonly("chunk_token_end", &ra::RadixPlan::chunk_token_end)
      .def_readonly("chunk_query_indptr", &ra::RadixPlan::chunk_query_indptr)
      .def_readonly("chunk_queries", &ra::RadixPlan::chunk_queries)
      .def_readonly("query_partial_indptr", &ra::RadixPlan::query_partial_indptr)
      .def_readonly("query_partials", &ra::RadixPlan::query_partials)
      .def_readonly("chunk_segment", &ra::RadixPlan::chunk_segment)
      .def_readonly("batch_fingerprint", &ra::RadixPlan::batch_fingerprint)
      .def("validate", &ra::validate_radix_plan, py::arg("context_lens"),
           "Raises InvalidArgument unless this is a valid plan for these context lengths.");

  m.def(
      "plan_batch",
      [](const at::Tensor& block_tables, const at::Tensor& context_lens, std::int32_t block_size,
         std::int32_t num_q_heads, std::int32_t num_kv_heads, std::int32_t head_dim,
         at::ScalarType dtype, std::int32_t num_sms, bool enable_sharing) {
        const ArgChecker c("plan_batch");
        const ra::BlockTables tables = tables_from_tensors(c, block_tables, context_lens);
        ra::PlannerOptions o =
            make_options(num_q_heads, num_kv_heads, head_dim, dtype, enable_sharing, 256, 0, 64, 64,
                         32.0 * 1024, 4.0 * 1024 * 1024);
        o.num_sms = num_sms;
        ra::PlanStats stats;
        ra::RadixPlan plan = ra::plan(tables, block_size, o, &stats);
        return py::make_tuple(std::move(plan), stats_dict(stats));
      },
      py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"), py::kw_only(),
      py::arg("num_q_heads") = 32, py::arg("num_kv_heads") = 8, py::arg("head_dim") = 128,
      py::arg("dtype") = at::kBFloat16, py::arg("num_sms") = 132, py::arg("enable_sharing") = true,
      "Host-only planning (no GPU needed): returns (RadixPlan, stats dict) for int32 tables.");
}

void bind_batch_planner(py::module_& m) {
  py::class_<RadixBatch>(m, "RadixBatch", R"doc(
One planned batch on the GPU: block tables and context lengths (int32 device tensors), the
uploaded radix plan, and what the planner decided. Pass it to radix_decode / radix_attention.)doc")
      .def_readonly("block_tables", &RadixBatch::block_tables)
      .def_readonly("context_lens", &RadixBatch::context_lens)
      .def_readonly("max_context_len", &RadixBatch::max_context_len)
      .def_readonly("seqs", &RadixBatch::seqs)
      .def_readonly("plan", &RadixBatch::plan)
      .def_property_readonly("block_size", [](const RadixBatch& b) { return b.shape.block_size; })
      .def_property_readonly("num_queries", &RadixBatch::num_queries)
      .def_property_readonly("valid", &RadixBatch::valid)
      .def_property_readonly("stats", [](const RadixBatch& b) { return stats_dict(b.stats); })
      .def_property_readonly("device", [](const RadixBatch& b) { return b.block_tables.device(); })
      .def("__repr__", [](const RadixBatch& b) {
        return "RadixBatch(num_queries=" + std::to_string(b.num_queries()) +
               ", chunks=" + std::to_string(b.plan.num_chunks()) +
               ", partials=" + std::to_string(b.plan.num_partials()) +
               ", shared_segments=" + std::to_string(b.stats.num_shared_segments) +
               ", valid=" + (b.valid() ? "True" : "False") + ")";
      });

  py::class_<BatchPlanner>(m, "BatchPlanner", R"doc(
Plans decode batches for one model shape (head counts, head_dim, KV dtype): finds the KV
blocks that running sequences share, decides with a cost model which shared prefixes to read
once for all their queries, splits long ranges (split-KV), and uploads the plan and the block
tables to the GPU on the current stream (one copy each).

num_sms defaults to the device's SM count. deterministic=True: batch-invariant plans (chunks
at absolute multiples of deterministic_chunk_tokens, fixed merge order), so that a query's
output bits do not depend on the rest of the batch nor on its prefix being shared. A RadixBatch stays valid for num_plan_buffers - 1
later plan() calls (its device buffer is then reused; radix_decode raises StateError).)doc")
      .def(py::init([](std::int32_t num_q_heads, std::int32_t num_kv_heads, std::int32_t head_dim,
                       at::ScalarType dtype, std::optional<std::int32_t> num_sms,
                       bool enable_sharing, std::int32_t min_chunk_tokens,
                       std::int32_t max_chunk_tokens, std::int32_t chunk_alignment_tokens,
                       std::int32_t rows_per_tile, double segment_overhead_bytes,
                       double merge_launch_bytes, std::int32_t num_plan_buffers,
                       bool deterministic, std::int32_t deterministic_chunk_tokens) {
             ra::PlannerOptions o =
                 make_options(num_q_heads, num_kv_heads, head_dim, dtype, enable_sharing,
                              min_chunk_tokens, max_chunk_tokens, chunk_alignment_tokens,
                              rows_per_tile, segment_overhead_bytes, merge_launch_bytes);
             o.deterministic = deterministic;
             o.deterministic_chunk_tokens = deterministic_chunk_tokens;
             return std::make_unique<BatchPlanner>(o, num_sms, num_plan_buffers);
           }),
           py::arg("num_q_heads"), py::arg("num_kv_heads"), py::arg("head_dim"),
           py::arg("dtype") = at::kBFloat16, py::kw_only(), py::arg("num_sms") = py::none(),
           py::arg("enable_sharing") = true, py::arg("min_chunk_tokens") = 256,
           py::arg("max_chunk_tokens") = 0, py::arg("chunk_alignment_tokens") = 64,
           py::arg("rows_per_tile") = 64, py::arg("segment_overhead_bytes") = 32.0 * 1024,
           py::arg("merge_launch_bytes") = 4.0 * 1024 * 1024, py::arg("num_plan_buffers") = 2,
           py::arg("deterministic") = false, py::arg("deterministic_chunk_tokens") = 512)
      .def_property(
          "enable_sharing", [](BatchPlanner& p) { return p.options().enable_sharing; },
          [](BatchPlanner& p, bool on) { p.options().enable_sharing = on; },
          "False plans every query alone (plain paged decode through the radix kernel).")
      .def_property_readonly(
          "deterministic", [](BatchPlanner& p) { return p.options().deterministic; },
          "Batch-invariant plans (PlannerOptions::deterministic): a query's output bits do not "
          "depend on the rest of the batch nor on whether its prefix is shared.")
      .def_property_readonly("num_q_heads", [](BatchPlanner& p) { return p.options().num_q_heads; })
      .def_property_readonly("num_kv_heads",
                             [](BatchPlanner& p) { return p.options().num_kv_heads; })
      .def_property_readonly("head_dim", [](BatchPlanner& p) { return p.options().head_dim; })
      .def_property_readonly("num_plan_buffers", &BatchPlanner::num_plan_buffers)
      .def(
          "plan",
          [](BatchPlanner& p, const ra::SequenceManager& manager,
             const std::vector<ra::SequenceId>& seqs, py::handle device) {
            return p.plan_sequences(manager, seqs, device_arg(device, "BatchPlanner.plan"));
          },
          py::arg("manager"), py::arg("seqs"), py::kw_only(), py::arg("device") = py::none(),
          "Plans the batch whose row i is the new token of seqs[i] (live sequences of "
          "manager); uploads it to `device` (default: the current CUDA device).")
      .def(
          "plan_tables",
          [](BatchPlanner& p, const at::Tensor& block_tables, const at::Tensor& context_lens,
             std::int32_t block_size, py::handle device_obj) {
            const ArgChecker c("BatchPlanner.plan_tables");
            const auto device = device_arg(device_obj, "BatchPlanner.plan_tables");
            return p.plan_tables(tables_from_tensors(c, block_tables, context_lens), block_size,
                                 device.has_value() || !block_tables.is_cuda()
                                     ? device
                                     : std::optional<at::Device>(block_tables.device()),
                                 {});
          },
          py::arg("block_tables"), py::arg("context_lens"), py::arg("block_size"), py::kw_only(),
          py::arg("device") = py::none(),
          "Plans a batch given as int32 tensors (CPU or CUDA; CUDA ones are read back, which "
          "synchronizes). Sequences that share a prefix must hold the same block ids there.");
}

}  // namespace

void bind_planner(py::module_& m) {
  bind_plan(m);
  bind_batch_planner(m);
}

}  // namespace radix_attention_torch
