#pragma once
/// @file
/// The host half of AttentionBatch (ops/attention_batch.cuh): checks a step against the maxima,
/// plans it, and writes everything its launch reads into one int32 staging slot of a layout
/// fixed at construction, so that one copy moves it to the GPU. Plain C++17 (no CUDA): the
/// checks and the slot contents are tested without a GPU (tests/kernels/
/// attention_batch_stager_test.cpp). Not a public header.
///
/// Slot layout (int32 words; B = max_batch_size, M = max_blocks_per_seq):
///   [lens, lens + B)            context lengths (padding rows 0)
///   [qo_indptr, + B + 1)        prefill CSR over the query rows (decode: unused)
///   [tables, + B * M)           block tables, row stride M, unused entries kBlockTablePadding
///   [plan, + packed plan size)  radix plan packed for the fixed capacity (256-byte aligned)
/// A step copies a prefix of it: up to its launched rows' tables (paged, prefill) or up to the
/// plan's last work item (radix).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "radix_attention/cache/batch_planner.hpp"
#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/ops/attention_batch_config.hpp"
#include "radix_attention/plan/radix_plan.hpp"
#include "radix_attention/plan/radix_plan_layout.hpp"

namespace radix_attention {

/// Segments (shared levels plus the private suffix) per query that default_max_partials()
/// leaves room for on top of the chunks of an unshared context: a prompt shared by all, one
/// shared by a group, a fork point, the private suffix.
inline constexpr std::int64_t kDefaultSegmentsPerQuery = 4;

/**
 * @brief Partial states a radix plan of `config`'s maxima needs at most without sharing, plus
 * room for kDefaultSegmentsPerQuery segments per query: max_batch_size x (ceil(context
 * capacity / shortest chunk) + 4). The unshared plan of any batch within the maxima fits it.
 */
inline std::int64_t default_max_partials(const AttentionBatchConfig& config) {
  const PlannerOptions& o = config.tuning;
  const std::int64_t bs = std::max(config.block_size, 1);
  // The shortest chunk but a segment's last, as the planner's chunk_stage bounds it.
  std::int64_t align = detail::ceil_div(std::max(o.chunk_alignment_tokens, 1), bs) * bs;
  if (o.max_chunk_tokens > 0 && align > o.max_chunk_tokens) align = o.chunk_alignment_tokens;
  std::int64_t shortest = std::max(o.min_chunk_tokens, 1);
  if (o.max_chunk_tokens > 0) {
    shortest = std::min<std::int64_t>(shortest, o.max_chunk_tokens / align * align);
  }
  shortest = std::max<std::int64_t>(shortest, 1);
  // Batch-invariant plans: every query's chunks are the absolute grid of this length.
  if (o.deterministic) shortest = std::max(o.deterministic_chunk_tokens, 1);
  const std::int64_t context = std::int64_t{config.max_blocks_per_seq} * bs;
  const std::int64_t chunks = std::max<std::int64_t>(1, detail::ceil_div(context, shortest));
  return std::int64_t{config.max_batch_size} * (chunks + kDefaultSegmentsPerQuery);
}

namespace detail {

/// Word offsets of a staging slot (see the file comment) and the radix plan's fixed capacity.
struct AttentionBatchLayout {
  std::int64_t lens = 0, qo_indptr = 0, tables = 0, plan = 0, total = 0;
  std::int64_t row_stride = 0;  ///< = max_blocks_per_seq
  RadixPlanCapacity capacity{};
  RadixPlanOffsets plan_offsets{};
};

inline std::int64_t round_up(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

/// Checks `config` (device.num_sms filled in) and returns it with kv_element_bytes defaulted to
/// `element_bytes` and max_partials to default_max_partials().
inline AttentionBatchConfig checked_attention_batch_config(AttentionBatchConfig c,
                                                           std::int32_t element_bytes) {
  if (c.model.kv_element_bytes == 0) c.model.kv_element_bytes = element_bytes;
  expects(c.model.kv_element_bytes == element_bytes, "config.model.kv_element_bytes",
          c.model.kv_element_bytes, "must be 0 or the element size of the AttentionBatch's T");
  expects(c.block_size >= 1, "config.block_size", c.block_size, "must be >= 1");
  expects(c.max_batch_size >= 1 && c.max_batch_size <= 65535, "config.max_batch_size",
          c.max_batch_size, "must be in [1, 65535]");
  expects(c.max_blocks_per_seq >= 1, "config.max_blocks_per_seq", c.max_blocks_per_seq,
          "must be >= 1");
  expects(std::int64_t{c.max_blocks_per_seq} * c.block_size <= INT32_MAX,
          "config.max_blocks_per_seq * config.block_size",
          std::int64_t{c.max_blocks_per_seq} * c.block_size, "must fit in int32");
  expects(c.max_q_tokens >= 0, "config.max_q_tokens", c.max_q_tokens, "must be >= 0");
  expects(c.max_partials >= 0, "config.max_partials", c.max_partials,
          "must be >= 0 (0 = default_max_partials)");
  expects(c.num_slots >= 2 && c.num_slots <= 64, "config.num_slots", c.num_slots,
          "must be in [2, 64]");
  expects(std::isfinite(c.scale) && c.scale >= 0.f, "config.scale", c.scale,
          "must be finite and >= 0 (0 = 1 / sqrt(head_dim))");
  expects(c.model.num_kv_heads >= 1, "config.model.num_kv_heads", c.model.num_kv_heads,
          "must be >= 1");
  expects(c.model.num_q_heads >= 1 && c.model.num_q_heads % c.model.num_kv_heads == 0,
          "config.model.num_q_heads", c.model.num_q_heads,
          "must be a positive multiple of num_kv_heads");
  expects(c.device.num_sms >= 1, "config.device.num_sms", c.device.num_sms,
          "must be >= 1 (AttentionBatch fills in the device's)");
  check_planner_options(planner_options(c.model, c.device, c.tuning));
  expects(std::int64_t{c.max_q_tokens} * c.model.num_q_heads <= INT32_MAX,
          "config.max_q_tokens * num_q_heads", std::int64_t{c.max_q_tokens} * c.model.num_q_heads,
          "must fit in int32");
  if (c.max_partials == 0) c.max_partials = default_max_partials(c);
  const std::int64_t group = c.model.num_q_heads / c.model.num_kv_heads;
  expects(c.max_partials * group < (std::int64_t{1} << 31), "config.max_partials * group size",
          c.max_partials * group, "must fit in int32 (rows of the radix work list)");
  return c;
}

inline AttentionBatchLayout attention_batch_layout(const AttentionBatchConfig& c) {
  AttentionBatchLayout l;
  const std::int64_t b = c.max_batch_size;
  const std::int64_t group = c.model.num_q_heads / c.model.num_kv_heads;
  // A chunk's work items are ceil(queries x group / tile) <= queries x ceil(group / tile); the
  // tile is 16 rows in batch-invariant plans.
  const std::int64_t tile = c.tuning.deterministic ? kRadixBatchInvariantRows : kRadixRowsPerTile;
  const std::int64_t items_per_partial = ceil_div(group, tile);
  l.capacity =
      RadixPlanCapacity{c.max_partials, c.max_partials, b, c.max_partials * items_per_partial};
  l.plan_offsets = radix_plan_offsets(l.capacity);
  l.row_stride = c.max_blocks_per_seq;
  l.lens = 0;
  l.qo_indptr = round_up(b, 8);
  l.tables = round_up(l.qo_indptr + b + 1, 8);
  // 256 bytes: the packed plan's arrays are then 32-byte aligned, its items 16-byte aligned.
  l.plan = round_up(l.tables + b * l.row_stride, 64);
  l.total = l.plan + l.plan_offsets.total;
  return l;
}

/// One row of a step, as read from a SequenceManager or from caller-given tables.
struct StagedRow {
  const std::int32_t* blocks = nullptr;
  std::int32_t len = 0;
  std::int32_t q_len = 0;
  std::uint64_t source = 0;  ///< manager instance id; 0 = tables (rewritten every step)
  SequenceId key = 0;
};

/// What a slot's table row holds: entries [0, written) of `key`'s block list (of manager
/// `source`) as they were when written; a block list only grows at its end, so they stay valid.
struct SlotRowMark {
  std::uint64_t source = 0;
  SequenceId key = 0;
  std::int32_t written = 0;  ///< entries that may differ from kBlockTablePadding
};

/**
 * Plans steps into staging slots. Every stage_* call checks all of its input before it
 * changes anything observable and writes the slot last (no-throw), so a call that throws
 * leaves every slot and the last step as they were (the BatchPlanner's cache may have moved,
 * which changes no result). Not thread-safe.
 */
class AttentionBatchStager {
 public:
  /// @param config checked with checked_attention_batch_config (device.num_sms >= 1).
  AttentionBatchStager(const AttentionBatchConfig& config, std::int32_t element_bytes)
      : config_(checked_attention_batch_config(config, element_bytes)),
        layout_(attention_batch_layout(config_)),
        planner_(config_.model, config_.device, config_.tuning),
        marks_(static_cast<std::size_t>(config_.num_slots),
               std::vector<SlotRowMark>(static_cast<std::size_t>(config_.max_batch_size))) {}

  const AttentionBatchConfig& config() const { return config_; }
  const AttentionBatchLayout& layout() const { return layout_; }
  BatchPlanner& planner() { return planner_; }
  /// The options radix plans are built with.
  const PlannerOptions& plan_options() const { return planner_.options(); }

  /// Writes the initial contents of a slot of layout().total words.
  void init_slot(std::int32_t* slot) const {
    std::fill(slot, slot + layout_.tables, 0);
    std::fill(slot + layout_.tables, slot + layout_.plan, kBlockTablePadding);
    std::fill(slot + layout_.plan, slot + layout_.total, 0);
  }

  /// A decode step (mode paged or radix) of `manager`'s sequences `seqs` into slot `slot`.
  const AttentionStep& stage_decode(const SequenceManager& manager,
                                    const std::vector<SequenceId>& seqs, AttentionMode mode,
                                    const PlanPadding& padding, int slot_index,
                                    std::int32_t* slot) {
    check_decode_mode(mode, padding);
    gather(manager, seqs);
    return finish_decode(mode, padding, &manager, &seqs, nullptr, nullptr, slot_index, slot);
  }

  /// A decode step of caller-given host tables (row i = query i; row_keys as for BatchPlanner).
  const AttentionStep& stage_decode(const BlockTableView& tables, AttentionMode mode,
                                    const PlanPadding& padding, const std::int64_t* row_keys,
                                    int slot_index, std::int32_t* slot) {
    check_decode_mode(mode, padding);
    gather(tables);
    return finish_decode(mode, padding, nullptr, nullptr, &tables, row_keys, slot_index, slot);
  }

  /// A prefill / extend step: row i has q_lens[i] new query rows, the last of its context.
  const AttentionStep& stage_prefill(const SequenceManager& manager,
                                     const std::vector<SequenceId>& seqs,
                                     const std::vector<std::int32_t>& q_lens,
                                     const PlanPadding& padding, int slot_index,
                                     std::int32_t* slot) {
    gather(manager, seqs);
    return finish_prefill(q_lens, padding, slot_index, slot);
  }

  const AttentionStep& stage_prefill(const BlockTableView& tables,
                                     const std::vector<std::int32_t>& q_lens,
                                     const PlanPadding& padding, int slot_index,
                                     std::int32_t* slot) {
    gather(tables);
    return finish_prefill(q_lens, padding, slot_index, slot);
  }

 private:
  static void check_decode_mode(AttentionMode mode, const PlanPadding& padding) {
    expects(mode == AttentionMode::kPagedDecode || mode == AttentionMode::kRadixDecode, "mode",
            to_string(mode), "must be kPagedDecode or kRadixDecode (plan_prefill for prefill)");
    expects(padding.max_q_len == 0, "padding.max_q_len", padding.max_q_len,
            "must be 0 for a decode step (one query row per row)");
  }

  void check_batch_size(std::size_t n, const char* name) const {
    expects<CapacityError>(n <= static_cast<std::size_t>(config_.max_batch_size), name, n,
                           "exceeds config.max_batch_size");
  }

  void check_row_capacity(std::size_t i, std::int32_t len, const char* what) const {
    const std::int64_t capacity = std::int64_t{config_.max_blocks_per_seq} * config_.block_size;
    expects_that<CapacityError>(len <= capacity, what, "[", i, "] = ", len,
                                ": exceeds config.max_blocks_per_seq * block_size = ", capacity);
  }

  void gather(const SequenceManager& manager, const std::vector<SequenceId>& seqs) {
    check_batch_size(seqs.size(), "seqs.size()");
    expects(manager.block_size() == config_.block_size, "manager.block_size()",
            manager.block_size(), "must equal config.block_size");
    rows_.resize(seqs.size());
    for (std::size_t i = 0; i < seqs.size(); ++i) {
      StagedRow& r = rows_[i];
      r.len = manager.context_len(seqs[i]);  // InvalidArgument if not live
      check_row_capacity(i, r.len, "context_len(seqs)");
      const std::vector<BlockId>& blocks = manager.blocks(seqs[i]);
      expects_that<StateError>(
          static_cast<std::int64_t>(blocks.size()) * config_.block_size >= r.len, "seqs[", i,
          "]: the sequence's blocks do not cover its context");
      r.blocks = blocks.data();
      r.source = manager.instance_id();
      r.key = seqs[i];
    }
  }

  void gather(const BlockTableView& tables) {
    check_batch_size(static_cast<std::size_t>(std::max(tables.num_seqs, 0)), "tables.num_seqs");
    validate_block_tables(tables, config_.block_size, kAnyNumBlocks);
    rows_.resize(static_cast<std::size_t>(tables.num_seqs));
    for (std::int32_t i = 0; i < tables.num_seqs; ++i) {
      StagedRow& r = rows_[static_cast<std::size_t>(i)];
      r.len = tables.context_lens[i];
      check_row_capacity(static_cast<std::size_t>(i), r.len, "tables.context_lens");
      r.blocks = tables.block_tables + static_cast<std::ptrdiff_t>(i) * tables.row_stride;
      r.source = 0;
      r.key = 0;
    }
  }

  std::int32_t launch_rows(const PlanPadding& padding) const {
    const auto n = static_cast<std::int32_t>(rows_.size());
    expects(padding.rows == 0 || padding.rows >= n, "padding.rows", padding.rows,
            "must be 0 or >= the batch's rows");
    expects<CapacityError>(padding.rows <= config_.max_batch_size, "padding.rows", padding.rows,
                           "exceeds config.max_batch_size");
    return padding.rows == 0 ? n : padding.rows;
  }

  const AttentionStep& finish_decode(AttentionMode mode, const PlanPadding& padding,
                                     const SequenceManager* manager,
                                     const std::vector<SequenceId>* seqs,
                                     const BlockTableView* tables, const std::int64_t* row_keys,
                                     int slot_index, std::int32_t* slot) {
    const std::int32_t rows = launch_rows(padding);
    for (StagedRow& r : rows_) r.q_len = 1;
    AttentionStep step;
    step.launch = LaunchShape{mode, rows, 1};
    step.num_seqs = static_cast<std::int32_t>(rows_.size());
    step.total_q = rows;
    std::int64_t copy_words = layout_.tables + std::int64_t{rows} * layout_.row_stride;
    if (mode == AttentionMode::kRadixDecode) {
      const RadixPlan& shared =
          manager != nullptr ? planner_.plan(*manager, *seqs, &step.stats)
                             : planner_.plan(*tables, config_.block_size, row_keys, &step.stats);
      if (!pack(shared, rows, step)) {
        PlannerOptions unshared = planner_.options();
        unshared.enable_sharing = false;
        const RadixPlan fallback = manager != nullptr
                                       ? plan(*manager, *seqs, unshared, &step.stats)
                                       : plan(*tables, config_.block_size, unshared, &step.stats);
        expects<CapacityError>(pack(fallback, rows, step), "radix plan partials",
                               fallback.num_partials(),
                               "exceed config.max_partials even without sharing");
        step.radix_fell_back = true;
      }
      copy_words = layout_.plan + layout_.plan_offsets.items +
                   std::int64_t{staged_plan_items()} * kRadixItemWords;
    }
    step.copy_bytes = copy_words * static_cast<std::int64_t>(sizeof(std::int32_t));
    write_slot(slot_index, slot, mode == AttentionMode::kRadixDecode);
    staged_ = step;
    return staged_;
  }

  const AttentionStep& finish_prefill(const std::vector<std::int32_t>& q_lens,
                                      const PlanPadding& padding, int slot_index,
                                      std::int32_t* slot) {
    expects(q_lens.size() == rows_.size(), "q_lens.size()", q_lens.size(),
            "must equal the batch's rows");
    std::int64_t total = 0;
    std::int32_t longest = 0;
    for (std::size_t i = 0; i < rows_.size(); ++i) {
      expects_that(q_lens[i] >= 0 && q_lens[i] <= rows_[i].len, "q_lens[", i, "] = ", q_lens[i],
                   ": must be in [0, the row's context length ", rows_[i].len,
                   "] (the new tokens are the last of the context)");
      rows_[i].q_len = q_lens[i];
      total += q_lens[i];
      longest = std::max(longest, q_lens[i]);
    }
    expects<CapacityError>(total <= config_.max_q_tokens, "sum of q_lens", total,
                           "exceeds config.max_q_tokens");
    expects(padding.max_q_len == 0 || padding.max_q_len >= longest, "padding.max_q_len",
            padding.max_q_len, "must be 0 or >= the longest q_len");
    expects<CapacityError>(padding.max_q_len <= config_.max_q_tokens, "padding.max_q_len",
                           padding.max_q_len, "exceeds config.max_q_tokens");
    const std::int32_t rows = launch_rows(padding);
    AttentionStep step;
    step.launch = LaunchShape{AttentionMode::kPrefill, rows,
                              padding.max_q_len == 0 ? longest : padding.max_q_len};
    step.num_seqs = static_cast<std::int32_t>(rows_.size());
    step.total_q = static_cast<std::int32_t>(total);
    step.copy_bytes = (layout_.tables + std::int64_t{rows} * layout_.row_stride) *
                      static_cast<std::int64_t>(sizeof(std::int32_t));
    write_slot(slot_index, slot, false);
    staged_ = step;
    return staged_;
  }

  /// Packs `plan` (over the batch's rows) padded to `rows` queries into packed_ for the fixed
  /// capacity; false (packed_ unusable) if it does not fit.
  bool pack(const RadixPlan& plan, std::int32_t rows, AttentionStep& step) {
    const RadixPlan* source = &plan;
    if (rows > plan.num_queries) {
      padded_ = plan;
      padded_.num_queries = rows;
      padded_.query_partial_indptr.resize(static_cast<std::size_t>(rows) + 1,
                                          plan.query_partial_indptr.back());
      source = &padded_;
    }
    RadixPlanCapacity capacity = layout_.capacity;
    const std::int32_t group = config_.model.num_q_heads / config_.model.num_kv_heads;
    // The planner's plans are valid for their batch (and padding rows have no partials), so
    // the per-step validation of pack_radix_plan is skipped (the tests validate them).
    step.plan = pack_valid_radix_plan(*source, group, capacity, packed_);
    const RadixPlanCapacity& fixed = layout_.capacity;
    return capacity.chunks == fixed.chunks && capacity.partials == fixed.partials &&
           capacity.queries == fixed.queries && capacity.items == fixed.items;
  }

  /// Writes the staged rows into `slot` (no-throw: plain stores into memory sized at
  /// construction). Table rows of the same sequence as last time in this slot only get their
  /// new entries; entries a previous row wrote beyond the new one are reset to padding.
  void write_slot(int slot_index, std::int32_t* slot, bool with_plan) noexcept {
    std::vector<SlotRowMark>& marks = marks_[static_cast<std::size_t>(slot_index)];
    const std::size_t n = rows_.size();
    const auto b = static_cast<std::size_t>(config_.max_batch_size);
    std::int32_t* lens = slot + layout_.lens;
    std::int32_t* indptr = slot + layout_.qo_indptr;
    std::int32_t offset = 0;
    indptr[0] = 0;
    for (std::size_t i = 0; i < b; ++i) {
      const bool used = i < n;
      lens[i] = used ? rows_[i].len : 0;
      offset += used ? rows_[i].q_len : 0;
      indptr[i + 1] = offset;
      std::int32_t* row = slot + layout_.tables + static_cast<std::int64_t>(i) * layout_.row_stride;
      SlotRowMark& mark = marks[i];
      if (!used) {
        std::fill(row, row + mark.written, kBlockTablePadding);
        mark = SlotRowMark{};
        continue;
      }
      const StagedRow& r = rows_[i];
      const auto entries = static_cast<std::int32_t>(
          (std::int64_t{r.len} + config_.block_size - 1) / config_.block_size);
      const bool same =
          r.source != 0 && mark.source == r.source && mark.key == r.key && mark.written <= entries;
      const std::int32_t from = same ? mark.written : 0;
      std::copy(r.blocks + from, r.blocks + entries, row + from);
      if (mark.written > entries) std::fill(row + entries, row + mark.written, kBlockTablePadding);
      mark = SlotRowMark{r.source, r.key, entries};
    }
    if (with_plan) {
      const std::int64_t words =
          layout_.plan_offsets.items + std::int64_t{staged_plan_items()} * kRadixItemWords;
      std::memcpy(slot + layout_.plan, packed_.data(),
                  static_cast<std::size_t>(words) * sizeof(std::int32_t));
    }
  }

  /// Items of both work lists of the packed plan (the wide list follows the other).
  std::int32_t staged_plan_items() const {
    return packed_[kHeaderNumItems] + packed_[kHeaderNumWideItems];
  }

  AttentionBatchConfig config_;
  AttentionBatchLayout layout_;
  BatchPlanner planner_;
  std::vector<std::vector<SlotRowMark>> marks_;  ///< [slot][row]
  std::vector<StagedRow> rows_;
  RadixPlan padded_;
  std::vector<std::int32_t> packed_;
  AttentionStep staged_;
};

}  // namespace detail
}  // namespace radix_attention
