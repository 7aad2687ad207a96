#pragma once
/// @file
/// Definitions of BatchPlanner (included by cache/batch_planner.hpp; not a public header).
///
/// A step runs in two phases. The first reads and checks the input and matches each batch row
/// to a tracked row (by position when the batch order is unchanged, else by key); it changes
/// nothing but per-step marks, which the step counter makes stale for the next call. The
/// second updates the trie and the rows; should it throw (only for lack of memory), reset()
/// drops the cache so that no half-updated state is ever planned from.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace radix_attention {

inline BatchPlanner::BatchPlanner(const ModelShape& model, const DeviceShape& device,
                                  const PlannerOptions& tuning)
    : options_(planner_options(model, device, tuning)) {
  detail::check_planner_options(options_);
}

inline void BatchPlanner::set_tuning(const PlannerOptions& tuning) {
  const PlannerOptions next =
      planner_options(ModelShape{options_.num_q_heads, options_.num_kv_heads, options_.head_dim,
                                 options_.kv_element_bytes},
                      DeviceShape{options_.num_sms, options_.ctas_per_sm}, tuning);
  detail::check_planner_options(next);
  options_ = next;
  scratch_valid_ = false;  // the last decision was made with other parameters
}

inline void BatchPlanner::reset() noexcept {
  trie_.clear();  // the sentinel's slot was kept by the previous clear: no allocation
  rows_.clear();
  free_rows_.clear();
  by_key_.clear();
  batch_rows_.clear();
  exported_valid_ = false;
  scratch_valid_ = false;
  source_ = 0;
  block_size_ = 0;
}

inline const RadixPlan& BatchPlanner::plan(const SequenceManager& manager,
                                           const std::vector<SequenceId>& seqs, PlanStats* stats) {
  expects_that(seqs.size() <= static_cast<std::size_t>(INT32_MAX), "seqs.size() = ", seqs.size(),
               ": exceeds the int32 range of a batch");
  const std::size_t n = seqs.size();
  inputs_.resize(n);
  // The states found last step stay valid while no sequence of the manager ended (unordered_map
  // nodes do not move): a batch in the same order needs no lookup. A state found now is valid
  // for the current count, which is recorded only once all are found.
  const bool cached = manager.instance_id() == state_source_ && manager.num_ended() == state_epoch_;
  const std::size_t reusable = cached ? std::min(n, state_ids_.size()) : 0;
  state_ids_.resize(n);
  states_.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (i >= reusable || state_ids_[i] != seqs[i]) {
      states_[i] = &manager.state(seqs[i]);
      state_ids_[i] = seqs[i];
    }
    const detail::SequenceState& st = *states_[i];
    inputs_[i] = RowInput{st.blocks.data(), static_cast<std::int64_t>(st.blocks.size()),
                          st.num_tokens, seqs[i], true};
  }
  state_source_ = manager.instance_id();
  state_epoch_ = manager.num_ended();
  begin_step(manager.instance_id(), manager.block_size());
  return plan_inputs(stats);
}

inline const RadixPlan& BatchPlanner::plan(const BlockTableView& tables, std::int32_t block_size,
                                           const std::int64_t* row_keys, PlanStats* stats) {
  detail::check_block_table_shape(tables, block_size, kAnyNumBlocks);
  inputs_.resize(static_cast<std::size_t>(tables.num_seqs));
  for (std::int32_t s = 0; s < tables.num_seqs; ++s) {
    inputs_[static_cast<std::size_t>(s)] =
        RowInput{tables.block_tables + static_cast<std::ptrdiff_t>(s) * tables.row_stride,
                 tables.max_blocks_per_seq, tables.context_lens[s],
                 row_keys != nullptr ? row_keys[s] : 0, row_keys != nullptr};
  }
  begin_step(0, block_size);
  return plan_inputs(stats);
}

inline void BatchPlanner::begin_step(std::uint64_t source, std::int32_t block_size) {
  // Keys of another manager (or of tables) and another block size mean other rows.
  if (source != source_ || block_size != block_size_) reset();
  source_ = source;
  block_size_ = block_size;
  // Block sizes are powers of two in practice: a shift instead of two divisions per row.
  bs_shift_ = -1;
  for (int k = 0; k < 31; ++k) {
    if ((std::int32_t{1} << k) == block_size) bs_shift_ = k;
  }
  ++step_;  // stales every mark of an earlier (possibly failed) call
}

// The tracked row batch row i continues, or -1 for a new row; marks it. Throws nothing.
inline std::int32_t BatchPlanner::match(std::size_t i, const RowInput& in) {
  if (!in.keyed) return -1;
  std::int32_t r = -1;
  if (i < batch_rows_.size() && rows_[static_cast<std::size_t>(batch_rows_[i])].key == in.key &&
      rows_[static_cast<std::size_t>(batch_rows_[i])].keyed) {
    r = batch_rows_[i];  // the batch order did not change here: no lookup
  } else {
    const auto it = by_key_.find(in.key);
    if (it == by_key_.end()) return -1;
    r = it->second;
  }
  TrackedRow& t = rows_[static_cast<std::size_t>(r)];
  if (t.stamp == step_) return -1;  // a repeat of a row already matched: its own row
  // The contract spot check: the row only grew.
  if (in.len < t.len || (t.full > 0 && in.blocks[t.full - 1] != t.last_block)) return -1;
  t.stamp = step_;
  return r;
}

inline const RadixPlan& BatchPlanner::plan_inputs(PlanStats* stats) {
  const std::size_t n = inputs_.size();
  matches_.resize(n);
  hashes_.resize(n);
  last_blocks_.resize(n);
  next_rows_.resize(n);
  lens_.resize(n);
  end_nodes_.resize(n);
  full_.resize(n);
  // Phase 1: check and match (nothing cached changes but the marks).
  matched_ = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const RowInput& in = inputs_[i];
    const auto s = static_cast<std::int32_t>(i);
    // The checks branch first and build their messages only on failure (per row and step).
    if (in.len < 0 || in.len > in.capacity * block_size_) {
      expects_that(false, "context_lens[", s, "] = ", in.len,
                   ": must be in [0, max_blocks_per_seq * block_size = ", in.capacity * block_size_,
                   "]");
    }
    const std::int32_t r = match(i, in);
    matches_[i] = r;
    matched_ += r >= 0;
    lens_[i] = in.len;
    const std::int32_t full = blocks_of(in.len);
    full_[i] = full;
    const std::int32_t used = full + (in.len != full * block_size_ ? 1 : 0);
    // Only the entries the planner has not read before: checked, hashed and the last full
    // one kept here, so that the update below does not read the table again.
    detail::RowHash& hash = hashes_[i];
    hash = r >= 0 ? rows_[static_cast<std::size_t>(r)].hash : detail::RowHash{};
    const std::int64_t first = hash.count;
    std::int32_t lowest = 0;
    for (std::int64_t b = first; b < used; ++b) lowest |= in.blocks[b];  // sign bit: an id < 0
    if (lowest < 0) {
      for (std::int64_t b = first; b < used; ++b) {
        if (in.blocks[b] < 0) {
          expects_that(false, "block_tables[", s, "][", b, "] = ", in.blocks[b],
                       ": a block the context uses must be a block id >= 0");
        }
      }
    }
    if (used > first) hash.extend(in.blocks + first, used - first);
    last_blocks_[i] = full > 0 ? in.blocks[full - 1] : -1;
  }
  // Phase 2: update the cache, then plan from it.
  try {
    update_rows();
  } catch (...) {
    reset();
    throw;
  }
  // Same rows in the same order and the same trie shape (the steady state): the previous
  // export stands but for the leaves that grew.
  const bool same_rows =
      exported_valid_ && trie_.version() == exported_version_ && next_rows_ == batch_rows_;
  batch_rows_.swap(next_rows_);
  const std::uint64_t fingerprint = detail::fingerprint_of(
      static_cast<std::int32_t>(n), block_size_, lens_.data(),
      [&](std::int32_t s) { return rows_[static_cast<std::size_t>(batch_rows_[s])].hash.sum; });
  try {
    plan_exported(fingerprint, same_rows, stats);
  } catch (...) {
    reset();  // only for lack of memory; plans_[front_] is as the last call returned it
    throw;
  }
  return plans_[front_];
}

inline void BatchPlanner::plan_exported(std::uint64_t fingerprint, bool same_rows,
                                        PlanStats* stats) {
  const std::size_t n = inputs_.size();
  if (!same_rows) {  // (else update_rows patched the leaves that grew)
    exported_valid_ = false;
    trie_.export_to(end_nodes_.data(), full_.data(), static_cast<std::int32_t>(n), step_,
                    exported_);
    for (std::size_t i = 0; i < n; ++i) {
      rows_[static_cast<std::size_t>(batch_rows_[i])].pid = exported_.last_node[i];
    }
    exported_version_ = trie_.version();
    exported_valid_ = true;
  }
  const detail::BatchRows batch{nullptr, 0, lens_.data(), static_cast<std::int32_t>(n),
                                block_size_};
  const detail::CostModel model = detail::cost_model(options_);
  detail::decide_sharing(batch, exported_, model, scratch_.decision);
  // Batch-invariant plans re-derive their segments every step (patch_segments knows the
  // unaligned segments' invariants only).
  const bool segments_kept = same_rows && scratch_valid_ && !options_.deterministic &&
                             detail::patch_segments(batch, exported_, model, scratch_);
  scratch_valid_ = false;  // until the plan below is complete
  if (!segments_kept) {
    detail::segments_stage(batch, exported_, model, detail::invariant_chunk(options_), scratch_);
  }
  const detail::ChunkParams cp = detail::chunk_stage(batch, scratch_.segments, options_);
  if (segments_kept && detail::patch_plan(batch, cp, scratch_, plans_[front_])) {
    plans_[front_].batch_fingerprint = fingerprint;
  } else {
    RadixPlan& back = plans_[1 - front_];
    detail::emit_plan(batch.num_seqs, scratch_.segments, cp, scratch_.emit, back);
    back.batch_fingerprint = fingerprint;
    back.rows_per_item = detail::plan_rows_per_item(options_);
    front_ = 1 - front_;
  }
  scratch_valid_ = true;
  detail::write_stats(exported_, cp, scratch_, stats);
}

inline void BatchPlanner::update_rows() {
  // Rows that left the batch (or failed the spot check) first: their paths go away before new
  // rows are inserted, so splits and merges only follow the rows that stay.
  // This step's rows, for the trie's lazy leaves (see PrefixTrie::set_owner_rows).
  owner_rows_.resize(rows_.size());
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    if (matches_[i] >= 0) owner_rows_[static_cast<std::size_t>(matches_[i])] = inputs_[i].blocks;
  }
  trie_.set_owner_rows(&owner_rows_);
  const bool all_stay = matched_ == num_cached_rows();
  for (std::size_t r = 0; !all_stay && r < rows_.size(); ++r) {
    TrackedRow& t = rows_[r];
    if (!t.live || t.stamp == step_) continue;
    if (t.node >= 0) trie_.remove(t.node);
    if (t.keyed) by_key_.erase(t.key);
    t = TrackedRow{};
    free_rows_.push_back(static_cast<std::int32_t>(r));
  }
  for (std::size_t i = 0; i < inputs_.size(); ++i) {
    const RowInput& in = inputs_[i];
    std::int32_t r = matches_[i];
    if (r < 0) {
      if (free_rows_.empty()) {
        rows_.emplace_back();
        free_rows_.push_back(static_cast<std::int32_t>(rows_.size() - 1));
      }
      r = free_rows_.back();
      free_rows_.pop_back();
      owner_rows_.resize(rows_.size());
      owner_rows_[static_cast<std::size_t>(r)] = in.blocks;
      TrackedRow& t = rows_[static_cast<std::size_t>(r)];
      t.live = true;
      t.stamp = step_;
      // A repeated key (the same sequence twice in one batch) tracks the repeat unkeyed.
      t.keyed = in.keyed && by_key_.find(in.key) == by_key_.end();
      t.key = in.key;
      if (t.keyed) by_key_.emplace(in.key, r);
    }
    TrackedRow& t = rows_[static_cast<std::size_t>(r)];
    const std::int32_t full = full_[i];
    if (full > t.full) {
      t.node = t.node < 0 ? trie_.insert(in.blocks, full)
                          : trie_.extend(t.node, in.blocks, t.full, full, r);
      t.full = full;
      t.last_block = last_blocks_[i];
      if (exported_valid_ && t.pid >= 0 && i < batch_rows_.size() && batch_rows_[i] == r) {
        // A private leaf grew, at the row's last position (else the trie's shape or the batch
        // order changed, and all is exported again): its exported node now ends with the row.
        exported_.nodes[static_cast<std::size_t>(t.pid)].end_block = full;
        exported_.full_blocks[i] = full;
      }
    }
    t.len = in.len;
    t.hash = hashes_[i];
    next_rows_[i] = r;
    end_nodes_[i] = t.node;
  }
}

}  // namespace radix_attention
