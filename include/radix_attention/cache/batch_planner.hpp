#pragma once
/// @file
/// Batch planner: turns a batch's block tables into the RadixPlan that the radix-decode kernel
/// executes (docs/architecture.md, "Data contracts"). Plain C++17.
///
/// Sharing is found at block granularity. Sequences that share a cached prefix (through the
/// radix tree or a fork) hold the same block ids at the same positions, so a trie over the rows'
/// full-block id sequences reproduces the radix-tree paths the batch uses, at any depth: a prompt
/// shared by all, a few-shot block shared by a group, each request's private suffix. Only full
/// blocks identical in every sharer count; a query's last, partially filled block is private.
/// A cost model (PlannerOptions) decides which shared trie nodes are worth a shared segment;
/// long segments are split into chunks (split-KV) so the grid fills the GPU.
///
/// Two forms, one result: the stateless plan() builds the trie from scratch (linear in the
/// block-table entries the contexts use); the stateful BatchPlanner keeps the trie between
/// decode steps and reads only each row's new entries, so a step costs O(rows + trie nodes)
/// (bench/RESULTS.md, "batch planner").

#include <cstddef>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "radix_attention/cache/detail/planner_input.hpp"
#include "radix_attention/cache/detail/planner_pipeline.hpp"
#include "radix_attention/cache/detail/planner_prefix_trie.hpp"
#include "radix_attention/cache/detail/planner_trie.hpp"
#include "radix_attention/cache/planner_options.hpp"
#include "radix_attention/cache/sequence_manager.hpp"
#include "radix_attention/cache/validate_block_tables.hpp"
#include "radix_attention/core/error.hpp"
#include "radix_attention/core/views.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention {

/**
 * @brief 64-bit fingerprint of a batch: num_seqs, block_size, every context length and the
 * block-table entries the contexts use (padding and the row stride are ignored). A plan carries
 * the fingerprint of its batch (RadixPlan::batch_fingerprint) so a launcher can reject a stale
 * plan; any single changed value is always detected. Linear in the entries used; a
 * BatchPlanner's plans carry the same value, computed in O(rows) per step.
 * @throw InvalidArgument on an inconsistent batch (validate_block_tables).
 */
inline std::uint64_t fingerprint_batch(const BlockTableView& tables, std::int32_t block_size) {
  return detail::fingerprint_unchecked(detail::checked_rows(tables, block_size));
}

/// @brief fingerprint_batch over BlockTables (e.g. SequenceManager::export_block_tables).
/// @throw InvalidArgument if the arrays' sizes disagree or the batch is inconsistent.
inline std::uint64_t fingerprint_batch(const BlockTables& tables, std::int32_t block_size) {
  return fingerprint_batch(tables.view(), block_size);
}

/**
 * @brief Plans one batch from scratch: shared segments, private segments, chunks, partials and
 * merge lists.
 * @param tables the batch's block tables (host memory); row q is query q of the plan.
 * @param block_size tokens per block, >= 1.
 * @param options cost model and chunking parameters.
 * @param stats if not null, receives what was decided (untouched on a throw).
 * @return a plan that passes validate_radix_plan for tables.context_lens, with
 * batch_fingerprint = fingerprint_batch(tables, block_size). Every chunk's row holds the same
 * block ids as the row of each query it serves over the chunk's token range. A query with
 * context 0 has no partials; each query's partials are listed in token order.
 * @throw InvalidArgument for invalid options or an inconsistent batch (validate_block_tables
 * with any pool size: the message names the row and position).
 */
inline RadixPlan plan(const BlockTableView& tables, std::int32_t block_size,
                      const PlannerOptions& options = {}, PlanStats* stats = nullptr) {
  detail::check_planner_options(options);
  const detail::BatchRows batch = detail::checked_rows(tables, block_size);
  detail::BlockTrie trie;
  detail::build_block_trie(batch, trie);
  detail::PlannerScratch scratch;
  RadixPlan result;
  detail::plan_from_trie(batch, trie, options, detail::fingerprint_unchecked(batch), scratch,
                         result, stats);
  return result;
}

/**
 * @brief Plans a batch given as BlockTables (e.g. from SequenceManager::export_block_tables).
 * @throw InvalidArgument as plan(const BlockTableView&, ...), or if the arrays' sizes disagree.
 */
inline RadixPlan plan(const BlockTables& tables, std::int32_t block_size,
                      const PlannerOptions& options = {}, PlanStats* stats = nullptr) {
  return plan(tables.view(), block_size, options, stats);
}

/**
 * @brief Plans the batch `batch` of `manager`'s live sequences (row i = batch[i]) from scratch.
 * @throw InvalidArgument if a sequence is not live, or as plan(const BlockTableView&, ...).
 */
inline RadixPlan plan(const SequenceManager& manager, const std::vector<SequenceId>& batch,
                      const PlannerOptions& options = {}, PlanStats* stats = nullptr) {
  const BlockTables tables = manager.export_block_tables(batch);
  return plan(tables, manager.block_size(), options, stats);
}

/**
 * @brief Stateful batch planner for a decode loop: plans each step's batch with the same
 * result as plan() (the same RadixPlan, fingerprint included), reusing the previous step's
 * sharing structure instead of rebuilding it.
 *
 * It keeps the block trie of the rows it planned last, keyed by each row's identity (the
 * SequenceId, or a caller-given row key). Per step it reads each row's context length and
 * only the block-table entries added since it last saw the row: a row that gained full blocks
 * extends its path in the trie (a private suffix just grows), a new row (a request that joined,
 * a fork) is inserted once, a row that is no longer in the batch (finished, aborted, left the
 * batch) is removed. A step therefore costs O(rows + trie nodes + new entries), independent of
 * the context lengths, and the batch fingerprint is updated the same way. Rows may come in any
 * order and change order between steps.
 *
 * The identity contract: a row key names a block list that only grows at its end (true of a
 * SequenceManager sequence: see SequenceManager). Each step the planner checks the cheap part
 * of it — the context did not shrink and the row's last full block seen before is still there —
 * and plans a row that fails the check as a new row; an entry rewritten elsewhere in a keyed
 * row is not detected (check_plan_for_batch detects it, at O(entries)).
 *
 * Plans are returned by reference to the planner's own storage (valid until the next call), so
 * that a step allocates nothing once buffers have grown; in the steady state a step that keeps
 * the trie's shape and the cost model's decision only moves the final chunks' ends.
 *
 * Errors: every call checks its input before changing anything; a failed call changes nothing
 * the caller can observe (should memory run out while the trie is updated, the planner drops
 * its cached state and the next call plans from scratch, with the same result). Not
 * thread-safe.
 */
class BatchPlanner {
 public:
  /**
   * @brief A planner for one model and GPU.
   * @param model attention shape (prices K/V bytes per token and partial states).
   * @param device the GPU's SM count (required) and radix-kernel CTAs per SM (0: from head_dim).
   * @param tuning cost-model and chunking parameters; its model and device fields are replaced
   *        by `model` and `device` (planner_options()).
   * @throw InvalidArgument for an invalid shape, device or tuning (naming the options field).
   */
  BatchPlanner(const ModelShape& model, const DeviceShape& device,
               const PlannerOptions& tuning = {});

  /**
   * @brief Plans the decode step whose row i is the next token of `seqs[i]`.
   * @param manager the sequences' manager (a planner used with another manager starts over).
   * @param seqs live sequences of `manager` (repeats allowed: each repeat is its own row).
   * @param stats if not null, receives what was decided (untouched on a throw).
   * @return the plan plan(manager, seqs, options()) returns, owned by the planner: valid until
   *         the next call (a failed call leaves it as it was); copy it to keep it.
   * @throw InvalidArgument if a sequence is not live (nothing changes).
   */
  const RadixPlan& plan(const SequenceManager& manager, const std::vector<SequenceId>& seqs,
                        PlanStats* stats = nullptr);

  /**
   * @brief Plans a batch given as block tables (host memory), e.g. an engine's own.
   * @param tables the batch; row q is query q of the plan.
   * @param block_size tokens per block, >= 1 (a planner used with another block size starts
   *        over).
   * @param row_keys null, or [tables.num_seqs] identities of the rows under the contract above
   *        (e.g. request ids); rows without a key are planned as new rows every step.
   * @param stats if not null, receives what was decided (untouched on a throw).
   * @return the plan plan(tables, block_size, options()) returns, owned by the planner: valid
   *         until the next call (a failed call leaves it as it was); copy it to keep it.
   * @throw InvalidArgument if the shape is inconsistent, a context length is out of range, or
   *        an entry the planner reads (the new ones) is a negative block id (nothing changes).
   */
  const RadixPlan& plan(const BlockTableView& tables, std::int32_t block_size,
                        const std::int64_t* row_keys = nullptr, PlanStats* stats = nullptr);

  /// @brief The options plans are built with.
  const PlannerOptions& options() const { return options_; }

  /**
   * @brief Replaces the cost-model and chunking parameters (the model and device stay); the
   * cached trie stays valid, so the next step is still incremental.
   * @throw InvalidArgument for invalid parameters (nothing changes).
   */
  void set_tuning(const PlannerOptions& tuning);

  /// @brief Forgets the cached state: the next call plans from scratch.
  void reset() noexcept;

  /// @brief Rows whose state is cached (those of the last step).
  std::size_t num_cached_rows() const { return rows_.size() - free_rows_.size(); }

  /// @brief Trie nodes cached (shared or not).
  std::int32_t num_cached_nodes() const { return trie_.size(); }

 private:
  struct RowInput {
    const std::int32_t* blocks;
    std::int64_t capacity;  ///< entries readable through `blocks`
    std::int32_t len;
    std::int64_t key;
    bool keyed;
  };
  struct TrackedRow {
    std::int64_t key = 0;
    bool keyed = false;
    bool live = false;
    std::int32_t len = 0;
    std::int32_t full = 0;         ///< full blocks in the trie
    std::int32_t node = -1;        ///< trie node where they end; -1 when full == 0
    std::int32_t last_block = -1;  ///< block id at full - 1: the contract spot check
    std::int32_t pid = -1;         ///< its end node in exported_, -1 if none
    detail::RowHash hash;          ///< over the used entries
    std::uint64_t stamp = 0;       ///< step that matched it
  };

  void begin_step(std::uint64_t source, std::int32_t block_size);
  std::int32_t blocks_of(std::int32_t tokens) const {
    return bs_shift_ >= 0 ? tokens >> bs_shift_ : tokens / block_size_;
  }
  std::int32_t match(std::size_t i, const RowInput& in);
  const RadixPlan& plan_inputs(PlanStats* stats);
  void plan_exported(std::uint64_t fingerprint, bool same_rows, PlanStats* stats);
  void update_rows();

  PlannerOptions options_;
  std::uint64_t source_ = 0;  ///< manager instance id, or 0 for block tables
  std::int32_t block_size_ = 0;
  int bs_shift_ = -1;  ///< log2(block_size_), or -1 when it is not a power of two
  std::uint64_t step_ = 0;
  detail::PrefixTrie trie_;
  std::vector<TrackedRow> rows_;
  std::vector<std::int32_t> free_rows_;
  std::unordered_map<std::int64_t, std::int32_t> by_key_;
  std::vector<std::int32_t> batch_rows_;  ///< tracked row of each batch row, last step
  // plan(manager, ...): each batch row's sequence state, valid while the manager's
  // num_ended() is state_epoch_.
  std::vector<SequenceId> state_ids_;
  std::vector<const detail::SequenceState*> states_;
  std::uint64_t state_source_ = 0, state_epoch_ = 0;
  // Per-step scratch (kept for its memory).
  std::vector<RowInput> inputs_;
  std::vector<std::int32_t> matches_, next_rows_, lens_, end_nodes_, full_, last_blocks_;
  std::vector<detail::RowHash> hashes_;  ///< each row's hash after this step
  std::size_t matched_ = 0;
  std::vector<const std::int32_t*> owner_rows_;  ///< per tracked row: its blocks this step
  detail::BlockTrie exported_;                   ///< the trie as the last step's plan read it
  std::uint64_t exported_version_ = 0;
  bool exported_valid_ = false;
  detail::PlannerScratch scratch_;
  bool scratch_valid_ = false;  ///< scratch_ and plans_[front_] describe the last step
  // Two plans: a step either patches the front one (no allocation, cannot fail) or writes the
  // back one and swaps, so that a failed call leaves the plan returned last as it was.
  RadixPlan plans_[2];
  int front_ = 0;
};

/**
 * @brief Checks that `plan` was built for the batch and is safe to execute on it: the
 * fingerprint matches, the plan passes validate_radix_plan, and every chunk's row holds the same
 * block ids as the row of each query it serves over the chunk's token range (what lets a kernel
 * read a shared chunk once for all its queries).
 * @throw StateError if plan.batch_fingerprint is not the batch's (a stale plan: the sequences
 * changed since planning); InvalidArgument if the batch is inconsistent, the plan is invalid, or
 * a chunk serves a query whose blocks differ from the chunk row's.
 */
inline void check_plan_for_batch(const RadixPlan& plan, const BlockTableView& tables,
                                 std::int32_t block_size) {
  const std::uint64_t fingerprint = fingerprint_batch(tables, block_size);
  expects<StateError>(
      plan.batch_fingerprint == fingerprint, "plan.batch_fingerprint", plan.batch_fingerprint,
      "does not match the batch (a stale plan: rebuild it after the batch changes)");
  validate_radix_plan(
      plan, std::vector<std::int32_t>(tables.context_lens, tables.context_lens + tables.num_seqs));
  const auto row = [&](std::int32_t s) {
    return tables.block_tables + static_cast<std::ptrdiff_t>(s) * tables.row_stride;
  };
  for (std::int32_t c = 0; c < plan.num_chunks(); ++c) {
    const auto ci = static_cast<std::size_t>(c);
    const std::int32_t* chunk_row = row(plan.chunk_row[ci]);
    const std::int32_t first = plan.chunk_token_begin[ci] / block_size;
    const std::int32_t last = (plan.chunk_token_end[ci] - 1) / block_size;
    for (auto p = plan.chunk_query_indptr[ci]; p < plan.chunk_query_indptr[ci + 1]; ++p) {
      const std::int32_t q = plan.chunk_queries[static_cast<std::size_t>(p)];
      const std::int32_t* query_row = row(q);
      for (std::int32_t b = first; b <= last; ++b) {
        expects_that(query_row[b] == chunk_row[b], "plan chunk ", c, " (row ", plan.chunk_row[ci],
                     ") serves query ", q, " whose block ", b, " is ", query_row[b],
                     ", not the chunk row's ", chunk_row[b]);
      }
    }
  }
}

/// @brief check_plan_for_batch over BlockTables.
inline void check_plan_for_batch(const RadixPlan& plan, const BlockTables& tables,
                                 std::int32_t block_size) {
  check_plan_for_batch(plan, tables.view(), block_size);
}

}  // namespace radix_attention

#include "radix_attention/cache/detail/batch_planner.inl"
