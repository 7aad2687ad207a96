#pragma once
/// @file
/// The packed, device-side form of a RadixPlan: one flat int32 buffer (header + the plan's CSR
/// arrays + the kernel's work list), built on the host and copied to the GPU with one copy.
/// Plain C++17 (no CUDA), so packing and its checks run and are tested without a GPU; the
/// radix kernels (kernels/) and the batch planner (cache/) both include it, so the tile shape
/// they agree on is written once, here.
///
/// Array offsets depend only on the buffer's *capacities*, never on the plan's sizes: while
/// plans fit, the device address of every array stays the same from batch to batch, so a
/// launch captured in a CUDA graph stays valid when later plans are uploaded.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "radix_attention/core/error.hpp"
#include "radix_attention/plan/radix_plan.hpp"

namespace radix_attention {

/// Rows (query x query-head pairs of one KV head) one CTA of the radix kernel computes.
/// 4 warps x the 16 rows of one m16n8k16 fragment; more rows are split over several CTAs.
/// The planner sizes its split-KV work in these tiles (PlannerOptions::rows_per_tile).
inline constexpr int kRadixRowsPerTile = 64;

/// Rows per work item of a batch-invariant plan (PlannerOptions::deterministic): one warp's
/// m16n8k16 fragment. The kernel picks its warp layout from an item's row count (16 rows or
/// fewer: the 4 warps split each KV tile's tokens and merge; more: warps split the rows), and
/// the two layouts sum a row's scores in different orders; items of at most 16 rows put every
/// row, shared chunk or private, through the same layout, so its bits do not depend on how
/// many queries share its chunk.
inline constexpr int kRadixBatchInvariantRows = 16;

/// Rows per work item of the warp-specialised wgmma radix kernel (kernels/detail/radix_tma.cuh):
/// its two consumer warpgroups' 64-row wgmma tiles over one K/V stream. Items of at most 64
/// rows take one consumer warpgroup, so two such items run side by side.
inline constexpr int kRadixWideRows = 128;

/// Tokens per KV tile of the radix kernel's mainloop: 64 keeps K+V of one stage at 32 KB for
/// head_dim 128 (see RadixMmaTraits). The planner aligns chunk lengths to it
/// (PlannerOptions::chunk_alignment_tokens) so that only a segment's last tile is partial.
inline constexpr int kRadixKvTileTokens = 64;

/// Radix-kernel CTAs resident per SM at a head_dim: 2 up to 128 (two CTAs' shared memory fit),
/// 1 for 256. The planner's default one-wave size is num_sms x this.
constexpr int radix_ctas_per_sm(int head_dim) { return head_dim <= 128 ? 2 : 1; }

namespace detail {

/// Header slots at the start of the packed buffer (read by the kernel when the grid is fixed).
enum RadixHeader : int {
  kHeaderNumItems = 0,
  kHeaderNumChunks = 1,
  kHeaderNumPartials = 2,
  kHeaderNumQueries = 3,
  kHeaderGroupSize = 4,
  kHeaderNumWideItems = 5,  ///< items of the wgmma kernel's list (kRadixWideRows rows each)
  kHeaderSize = 8,          // padded so the arrays start 32-byte aligned
};

}  // namespace detail

/// @brief Capacities of a packed plan buffer (entries of each array); offsets are derived from
/// them (DeviceRadixPlan::reserve, DeviceRadixPlan::capacity).
struct RadixPlanCapacity {
  std::int64_t chunks = 0;
  std::int64_t partials = 0;
  std::int64_t queries = 0;
  std::int64_t items = 0;

  bool holds(const RadixPlanCapacity& need) const {
    return need.chunks <= chunks && need.partials <= partials && need.queries <= queries &&
           need.items <= items;
  }
};

/// @brief One work item as the kernel reads it (two 16-byte loads): everything its prologue needs,
/// so the chain of dependent loads before the first KV copy is item -> block table -> KV.
struct RadixItem {
  std::int32_t chunk;       ///< chunk index (partial ids are query_base + row / group)
  std::int32_t row_begin;   ///< first row of the tile within the chunk's queries x group rows
  std::int32_t rows;        ///< rows in this tile (<= kRadixRowsPerTile)
  std::int32_t begin;       ///< chunk_token_begin
  std::int32_t end;         ///< chunk_token_end
  std::int32_t table_row;   ///< chunk_row
  std::int32_t query_base;  ///< chunk_query_indptr[chunk]
  std::int32_t reserved;
};
inline constexpr int kRadixItemWords = 8;
static_assert(sizeof(RadixItem) == kRadixItemWords * sizeof(std::int32_t), "packed item layout");

namespace detail {

/// Offsets (in int32 entries) of each array inside the packed buffer.
struct RadixPlanOffsets {
  std::int64_t chunk_row, chunk_begin, chunk_end, chunk_query_indptr, chunk_queries;
  std::int64_t query_partial_indptr, query_partials, items, total;
};

inline std::int64_t round_up8(std::int64_t n) { return (n + 7) / 8 * 8; }

inline RadixPlanOffsets radix_plan_offsets(const RadixPlanCapacity& cap) {
  RadixPlanOffsets o{};
  std::int64_t at = kHeaderSize;
  auto take = [&at](std::int64_t n) {
    const std::int64_t here = at;
    at += round_up8(n);
    return here;
  };
  o.chunk_row = take(cap.chunks);
  o.chunk_begin = take(cap.chunks);
  o.chunk_end = take(cap.chunks);
  o.chunk_query_indptr = take(cap.chunks + 1);
  o.chunk_queries = take(cap.partials);
  o.query_partial_indptr = take(cap.queries + 1);
  o.query_partials = take(cap.partials);
  // Both work lists, the wide one (wgmma kernel) right after the other's items: it never has
  // more items (its tiles hold at least as many rows), and a step copies only what is used.
  o.items = take(2 * cap.items * kRadixItemWords);
  o.total = at;
  return o;
}

}  // namespace detail

/// @brief Device view of a packed plan: what the kernel receives (pointers into one buffer).
struct RadixPlanView {
  const std::int32_t* header;
  const std::int32_t* chunk_row;
  const std::int32_t* chunk_begin;
  const std::int32_t* chunk_end;
  const std::int32_t* chunk_query_indptr;
  const std::int32_t* chunk_queries;
  /// The work list of the mma kernels ([0, header[kHeaderNumItems])), followed by the wgmma
  /// kernel's (the same chunks in tiles of kRadixWideRows rows, header[kHeaderNumWideItems]).
  const RadixItem* items;
};

namespace detail {

inline RadixPlanView radix_plan_view(const std::int32_t* base, const RadixPlanOffsets& o) {
  return RadixPlanView{base,
                       base + o.chunk_row,
                       base + o.chunk_begin,
                       base + o.chunk_end,
                       base + o.chunk_query_indptr,
                       base + o.chunk_queries,
                       reinterpret_cast<const RadixItem*>(base + o.items)};
}

}  // namespace detail

/// @brief What the launcher needs to know about a packed plan without reading it back.
struct RadixPlanSummary {
  std::int32_t num_queries = 0;
  std::int32_t num_chunks = 0;
  std::int32_t num_partials = 0;
  std::int32_t num_items = 0;
  std::int32_t num_wide_items = 0;  ///< items of the wgmma kernel's list
  /// Wide items of more than 64 rows (a chunk shared by more queries than one 64-row wgmma
  /// tile holds): the work the wgmma kernel is for.
  std::int32_t num_shared_wide_items = 0;
  bool batch_invariant =
      false;  ///< the plan's rows_per_item is set (PlannerOptions::deterministic)
  std::int32_t group_size = 0;
  std::int32_t max_token_end = 0;  ///< largest chunk_token_end: bounds the block-table width
  std::int64_t rows = 0;           ///< sum over chunks of queries x group size
  std::uint64_t batch_fingerprint = 0;
};

namespace detail {

/**
 * Work items of the radix kernel: one per (chunk, tile of plan.rows_per_item rows, by default
 * kRadixRowsPerTile), where the
 * chunk's rows are its queries x `group_size` query heads (row = query slot * group + head).
 * Ordered by estimated cost, largest first, so that long shared chunks start early and short
 * private ones fill the tail of the grid; a chunk's tiles stay adjacent (they read the same KV,
 * which then comes from L2).
 */
inline void radix_work_items(const RadixPlan& plan, std::int32_t group_size,
                             std::vector<RadixItem>& out, std::int64_t rows_per_item = 0) {
  struct Keyed {
    std::int64_t cost;
    RadixItem item;
  };
  std::vector<Keyed> items;
  const std::int64_t tile = rows_per_item > 0        ? rows_per_item
                            : plan.rows_per_item > 0 ? plan.rows_per_item
                                                     : kRadixRowsPerTile;
  for (std::size_t c = 0; c < plan.chunk_row.size(); ++c) {
    const std::int64_t rows =
        static_cast<std::int64_t>(plan.chunk_query_indptr[c + 1] - plan.chunk_query_indptr[c]) *
        group_size;
    const std::int64_t tokens = plan.chunk_token_end[c] - plan.chunk_token_begin[c];
    for (std::int64_t r = 0; r < rows; r += tile) {
      const std::int64_t tile_rows = std::min<std::int64_t>(tile, rows - r);
      // Bytes read (~tokens) plus tensor-core work (~tokens x 16-row fragments), in one unit.
      const std::int64_t cost = tokens * (4 + (tile_rows + 15) / 16);
      items.push_back(
          {cost,
           {static_cast<std::int32_t>(c), static_cast<std::int32_t>(r),
            static_cast<std::int32_t>(tile_rows), plan.chunk_token_begin[c],
            plan.chunk_token_end[c], plan.chunk_row[c], plan.chunk_query_indptr[c], 0}});
    }
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const Keyed& a, const Keyed& b) { return a.cost > b.cost; });
  out.resize(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) out[i] = items[i].item;
}

/// Capacity a plan needs, given its work-item count (which depends on the group size).
inline RadixPlanCapacity radix_plan_need(const RadixPlan& plan, std::int64_t num_items) {
  return RadixPlanCapacity{plan.num_chunks(), plan.num_partials(), plan.num_queries, num_items};
}

/**
 * pack_radix_plan without validate_radix_plan, for a plan that is valid for its batch by
 * construction (a batch planner's, packed by AttentionBatch every step: validation allocates
 * and is O(partials), most of the time of packing).
 */
inline RadixPlanSummary pack_valid_radix_plan(const RadixPlan& plan, std::int32_t group_size,
                                              RadixPlanCapacity& cap,
                                              std::vector<std::int32_t>& out) {
  expects(group_size >= 1, "group_size", group_size, "must be >= 1 (num_q_heads / num_kv_heads)");
  expects(static_cast<std::int64_t>(plan.num_partials()) * group_size < (std::int64_t{1} << 31),
          "partials x group_size", static_cast<std::int64_t>(plan.num_partials()) * group_size,
          "must fit in int32 (rows of the work list)");
  std::vector<RadixItem> items;
  radix_work_items(plan, group_size, items);
  std::vector<RadixItem> wide_items;
  radix_work_items(plan, group_size, wide_items, kRadixWideRows);

  const RadixPlanCapacity need = radix_plan_need(plan, static_cast<std::int64_t>(items.size()));
  RadixPlanCapacity grown = cap;
  if (!cap.holds(need)) {
    // Grow by half again so a slowly growing batch does not reallocate every step.
    auto grow = [](std::int64_t have, std::int64_t want) {
      return have >= want ? have : std::max(want, have + have / 2);
    };
    grown = RadixPlanCapacity{grow(cap.chunks, need.chunks), grow(cap.partials, need.partials),
                              grow(cap.queries, need.queries), grow(cap.items, need.items)};
  }
  const RadixPlanOffsets o = radix_plan_offsets(grown);
  std::vector<std::int32_t> packed(static_cast<std::size_t>(o.total), 0);
  packed[kHeaderNumItems] = static_cast<std::int32_t>(items.size());
  packed[kHeaderNumChunks] = plan.num_chunks();
  packed[kHeaderNumPartials] = plan.num_partials();
  packed[kHeaderNumQueries] = plan.num_queries;
  packed[kHeaderGroupSize] = group_size;
  packed[kHeaderNumWideItems] = static_cast<std::int32_t>(wide_items.size());
  auto put = [&packed](std::int64_t at, const std::vector<std::int32_t>& v) {
    std::copy(v.begin(), v.end(), packed.begin() + at);
  };
  put(o.chunk_row, plan.chunk_row);
  put(o.chunk_begin, plan.chunk_token_begin);
  put(o.chunk_end, plan.chunk_token_end);
  put(o.chunk_query_indptr, plan.chunk_query_indptr);
  put(o.chunk_queries, plan.chunk_queries);
  put(o.query_partial_indptr, plan.query_partial_indptr);
  put(o.query_partials, plan.query_partials);
  if (!items.empty()) {
    std::memcpy(packed.data() + o.items, items.data(), items.size() * sizeof(RadixItem));
  }
  if (!wide_items.empty()) {
    std::memcpy(packed.data() + o.items + items.size() * kRadixItemWords, wide_items.data(),
                wide_items.size() * sizeof(RadixItem));
  }

  RadixPlanSummary s;
  s.num_queries = plan.num_queries;
  s.num_chunks = plan.num_chunks();
  s.num_partials = plan.num_partials();
  s.num_items = static_cast<std::int32_t>(items.size());
  s.num_wide_items = static_cast<std::int32_t>(wide_items.size());
  for (const RadixItem& it : wide_items) s.num_shared_wide_items += it.rows > 64 ? 1 : 0;
  s.batch_invariant = plan.rows_per_item > 0;
  s.group_size = group_size;
  for (std::size_t c = 0; c < plan.chunk_row.size(); ++c) {
    s.max_token_end = std::max(s.max_token_end, plan.chunk_token_end[c]);
    s.rows +=
        static_cast<std::int64_t>(plan.chunk_query_indptr[c + 1] - plan.chunk_query_indptr[c]) *
        group_size;
  }
  s.batch_fingerprint = plan.batch_fingerprint;
  // Commit (no-throw from here).
  out.swap(packed);
  cap = grown;
  return s;
}

/**
 * Validates `plan` against the batch (validate_radix_plan) and packs it into `out`, laid out
 * for capacity `cap` (grown to fit when smaller; the caller then reallocates).
 * @return the plan's summary. On failure throws InvalidArgument and leaves `out` untouched.
 */
inline RadixPlanSummary pack_radix_plan(const RadixPlan& plan,
                                        const std::vector<std::int32_t>& context_lens,
                                        std::int32_t group_size, RadixPlanCapacity& cap,
                                        std::vector<std::int32_t>& out) {
  expects(group_size >= 1, "group_size", group_size, "must be >= 1 (num_q_heads / num_kv_heads)");
  validate_radix_plan(plan, context_lens);
  return pack_valid_radix_plan(plan, group_size, cap, out);
}

}  // namespace detail
}  // namespace radix_attention
