// Host side of the library: BlockAllocator, RadixTree, SequenceManager. Plain C++ objects; a
// RadixTree / SequenceManager keeps its BlockAllocator alive (py::keep_alive), so Python code
// cannot free the pool under them.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "host_tensors.hpp"
#include "radix_attention/cache/block_allocator.hpp"
#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/cache/sequence_manager.hpp"

namespace py = pybind11;
namespace ra = radix_attention;

namespace radix_attention_torch {
namespace {

std::string repr_stats(const ra::RadixTreeStats& s) {
  return "RadixTreeStats(num_nodes=" + std::to_string(s.num_nodes) +
         ", cached_blocks=" + std::to_string(s.cached_blocks) +
         ", evictable_blocks=" + std::to_string(s.evictable_blocks) +
         ", locked_blocks=" + std::to_string(s.locked_blocks) +
         ", hit_tokens=" + std::to_string(s.hit_tokens) +
         ", miss_tokens=" + std::to_string(s.miss_tokens) +
         ", evicted_blocks=" + std::to_string(s.evicted_blocks) +
         ", hit_rate=" + std::to_string(s.hit_rate()) + ")";
}

void bind_allocator(py::module_& m) {
  py::class_<ra::BlockAllocator>(m, "BlockAllocator", R"doc(
Fixed pool of KV-cache blocks with per-block reference counts. Every operation succeeds
completely or raises and changes nothing; running out raises CapacityError.)doc")
      .def(py::init<std::int32_t>(), py::arg("num_blocks"))
      .def_property_readonly("num_blocks", &ra::BlockAllocator::num_blocks)
      .def_property_readonly("num_free", &ra::BlockAllocator::num_free)
      .def_property_readonly("num_used", &ra::BlockAllocator::num_used)
      .def("__contains__", &ra::BlockAllocator::contains, py::arg("block"))
      .def("ref_count", &ra::BlockAllocator::ref_count, py::arg("block"))
      .def("allocate", &ra::BlockAllocator::allocate, py::arg("n"),
           "Allocates n blocks (all or nothing), each with reference count 1.")
      .def("retain", py::overload_cast<ra::BlockId>(&ra::BlockAllocator::retain), py::arg("block"))
      .def("retain",
           py::overload_cast<const std::vector<ra::BlockId>&>(&ra::BlockAllocator::retain),
           py::arg("blocks"))
      .def("release", py::overload_cast<ra::BlockId>(&ra::BlockAllocator::release),
           py::arg("block"))
      .def("release",
           py::overload_cast<const std::vector<ra::BlockId>&>(&ra::BlockAllocator::release),
           py::arg("blocks"))
      .def("__repr__", [](const ra::BlockAllocator& a) {
        return "BlockAllocator(num_blocks=" + std::to_string(a.num_blocks()) +
               ", num_free=" + std::to_string(a.num_free()) + ")";
      });
}

void bind_tree(py::module_& m) {
  py::class_<ra::NodeHandle>(m, "NodeHandle")
      .def_readonly("id", &ra::NodeHandle::id)
      .def("valid", &ra::NodeHandle::valid)
      .def("__eq__", [](ra::NodeHandle a, ra::NodeHandle b) { return a == b; })
      .def("__hash__", [](ra::NodeHandle a) { return std::hash<std::int32_t>()(a.id); })
      .def("__repr__", [](ra::NodeHandle a) { return "NodeHandle(" + std::to_string(a.id) + ")"; });

  py::class_<ra::PrefixMatch>(m, "PrefixMatch")
      .def_readonly("num_tokens", &ra::PrefixMatch::num_tokens)
      .def_readonly("blocks", &ra::PrefixMatch::blocks)
      .def_readonly("node", &ra::PrefixMatch::node);

  py::class_<ra::InsertResult>(m, "InsertResult")
      .def_readonly("num_tokens", &ra::InsertResult::num_tokens)
      .def_readonly("num_deduplicated", &ra::InsertResult::num_deduplicated)
      .def_readonly("node", &ra::InsertResult::node);

  py::class_<ra::RadixTreeStats>(m, "RadixTreeStats")
      .def_readonly("num_nodes", &ra::RadixTreeStats::num_nodes)
      .def_readonly("cached_blocks", &ra::RadixTreeStats::cached_blocks)
      .def_readonly("evictable_blocks", &ra::RadixTreeStats::evictable_blocks)
      .def_readonly("locked_blocks", &ra::RadixTreeStats::locked_blocks)
      .def_readonly("hit_tokens", &ra::RadixTreeStats::hit_tokens)
      .def_readonly("miss_tokens", &ra::RadixTreeStats::miss_tokens)
      .def_readonly("evicted_blocks", &ra::RadixTreeStats::evicted_blocks)
      .def_property_readonly("hit_rate", &ra::RadixTreeStats::hit_rate)
      .def("__repr__", &repr_stats);

  py::class_<ra::RadixTree>(m, "RadixTree", R"doc(
Prefix cache: a radix tree over token ids whose edges hold whole KV blocks. Keys live in a
namespace (LoRA adapter, tenant, cache salt); different namespaces never share blocks. Tokens
may be given as a list of ints or a 1-D integer CPU tensor.)doc")
      .def(py::init([](ra::BlockAllocator& allocator, std::int32_t block_size) {
             return std::make_unique<ra::RadixTree>(allocator, block_size);
           }),
           py::arg("allocator"), py::arg("block_size"), py::keep_alive<1, 2>())
      .def_property_readonly("block_size", &ra::RadixTree::block_size)
      .def(
          "match_prefix",
          [](ra::RadixTree& t, py::handle tokens, ra::NamespaceId ns) {
            return t.match_prefix(token_ids(tokens, "RadixTree.match_prefix", "tokens"), ns);
          },
          py::arg("tokens"), py::arg("namespace") = 0,
          "Longest cached prefix of tokens, in whole blocks (blocks are not retained).")
      .def(
          "peek_prefix",
          [](const ra::RadixTree& t, py::handle tokens, ra::NamespaceId ns) {
            const std::vector<ra::TokenId> ids =
                token_ids(tokens, "RadixTree.peek_prefix", "tokens");
            const ra::PrefixPeek p = t.peek_prefix(ids.data(), ids.size(), ns);
            return py::make_tuple(p.num_tokens, p.unlocked_blocks);
          },
          py::arg("tokens"), py::arg("namespace") = 0,
          "Read-only lookup: (cached prefix tokens, of its blocks those evictable), without "
          "splitting, LRU update or statistics.")
      .def(
          "insert",
          [](ra::RadixTree& t, py::handle tokens, const std::vector<ra::BlockId>& blocks,
             ra::NamespaceId ns) {
            return t.insert(token_ids(tokens, "RadixTree.insert", "tokens"), blocks, ns);
          },
          py::arg("tokens"), py::arg("blocks"), py::arg("namespace") = 0,
          "Caches blocks as the KV of tokens (len(tokens) == len(blocks) * block_size); "
          "consumes one caller reference per block.")
      .def("lock", &ra::RadixTree::lock, py::arg("node"))
      .def("unlock", &ra::RadixTree::unlock, py::arg("node"))
      .def("evict", &ra::RadixTree::evict, py::arg("num_blocks"),
           "Evicts unlocked leaves (LRU) until num_blocks blocks are free again or nothing is "
           "left; returns the blocks freed.")
      .def_property_readonly("evictable_blocks", &ra::RadixTree::evictable_blocks)
      .def_property_readonly("cached_blocks", &ra::RadixTree::cached_blocks)
      .def_property_readonly("locked_blocks", &ra::RadixTree::locked_blocks)
      .def("stats", &ra::RadixTree::stats)
      .def("reset_stats", &ra::RadixTree::reset_stats)
      .def("holds", &ra::RadixTree::holds, py::arg("block"))
      .def("root", &ra::RadixTree::root)
      .def_property_readonly("num_nodes", &ra::RadixTree::num_nodes)
      .def("parent", &ra::RadixTree::parent, py::arg("node"))
      .def("children", &ra::RadixTree::children, py::arg("node"))
      .def(
          "token_range",
          [](const ra::RadixTree& t, ra::NodeHandle n) {
            const ra::TokenRange r = t.token_range(n);
            return py::make_tuple(r.begin, r.end);
          },
          py::arg("node"))
      .def("edge_tokens", &ra::RadixTree::edge_tokens, py::arg("node"))
      .def("node_blocks", &ra::RadixTree::node_blocks, py::arg("node"))
      .def("path_blocks", &ra::RadixTree::path_blocks, py::arg("node"))
      .def("depth", &ra::RadixTree::depth, py::arg("node"))
      .def("lock_count", &ra::RadixTree::lock_count, py::arg("node"))
      .def("__contains__", &ra::RadixTree::contains, py::arg("node"))
      .def("validate", &ra::RadixTree::validate,
           "Checks every invariant; raises StateError naming the first violated one.");
}

// The prefix-cache members of SequenceManager (constructor over a RadixTree, add,
// append_tokens, finish, abort, ...) are bound when the library has them; `SM` keeps the calls
// dependent so that an older library compiles without them.
template <class SM, class = void>
struct HasPrefixCache : std::false_type {};
template <class SM>
struct HasPrefixCache<SM, std::void_t<decltype(std::declval<SM&>().add(
                              std::declval<const std::vector<ra::TokenId>&>(), ra::NamespaceId{}))>>
    : std::true_type {};

template <class SM>
void bind_prefix_cache_members(py::class_<SM>& cls) {
  if constexpr (HasPrefixCache<SM>::value) {
    cls.def(py::init([](ra::BlockAllocator& allocator, ra::RadixTree& tree) {
              return std::make_unique<SM>(allocator, tree);
            }),
            py::arg("allocator"), py::arg("tree"), py::keep_alive<1, 2>(), py::keep_alive<1, 3>(),
            "A manager whose sequences share prefixes through `tree` (block_size from the tree).")
        .def(
            "add",
            [](SM& sm, py::handle tokens, ra::NamespaceId ns) {
              return sm.add(token_ids(tokens, "SequenceManager.add", "tokens"), ns);
            },
            py::arg("tokens"), py::arg("namespace") = 0,
            "Adds a request: reuses the longest cached prefix of its prompt (locked while the "
            "sequence lives), allocates the rest (evicting LRU cache entries if short). Only the "
            "uncached tokens are pending in the slot mapping.")
        .def(
            "append_tokens",
            [](SM& sm, ra::SequenceId seq, py::handle tokens) {
              sm.append_tokens(seq, token_ids(tokens, "SequenceManager.append_tokens", "tokens"));
            },
            py::arg("seq"), py::arg("tokens"),
            "append(seq, len(tokens)) that also records the ids, so finish() can cache them.")
        .def("finish", &SM::finish, py::arg("seq"),
             "Ends seq and caches its full blocks in the tree.")
        .def("abort", &SM::abort, py::arg("seq"), "Ends seq without caching anything.")
        .def("prefix_node", &SM::prefix_node, py::arg("seq"))
        .def("cached_prefix_len", &SM::cached_prefix_len, py::arg("seq"),
             "Tokens of seq that came from the cache when it was added.")
        .def_property_readonly("has_tree", [](const SM& sm) { return sm.tree() != nullptr; });
  } else {
    cls.def_property_readonly("has_tree", [](const SM&) { return false; });
  }
}

void bind_sequences(py::module_& m) {
  py::class_<ra::BlockCopy>(m, "BlockCopy")
      .def_readonly("src", &ra::BlockCopy::src)
      .def_readonly("dst", &ra::BlockCopy::dst)
      .def_readonly("num_tokens", &ra::BlockCopy::num_tokens)
      .def("__repr__", [](const ra::BlockCopy& c) {
        return "BlockCopy(src=" + std::to_string(c.src) + ", dst=" + std::to_string(c.dst) +
               ", num_tokens=" + std::to_string(c.num_tokens) + ")";
      });
  py::class_<ra::ForkResult>(m, "ForkResult")
      .def_readonly("child", &ra::ForkResult::child)
      .def_readonly("copies", &ra::ForkResult::copies);

  py::class_<ra::SequenceManager> cls(m, "SequenceManager", R"doc(
Block tables of the live sequences over a BlockAllocator: create / append / fork / release,
and their export as int32 tensors (block tables, context lengths, slot mapping). Built over a
RadixTree, requests reuse cached prefixes (add) and leave their blocks cached (finish).)doc");
  cls.def(py::init([](ra::BlockAllocator& allocator, std::int32_t block_size) {
            return std::make_unique<ra::SequenceManager>(allocator, block_size);
          }),
          py::arg("allocator"), py::arg("block_size"), py::keep_alive<1, 2>())
      .def_property_readonly("block_size", &ra::SequenceManager::block_size)
      .def("create", &ra::SequenceManager::create, py::arg("num_tokens"))
      .def("append", &ra::SequenceManager::append, py::arg("seq"), py::arg("num_tokens") = 1)
      .def("fork", &ra::SequenceManager::fork, py::arg("parent"))
      .def("release", &ra::SequenceManager::release, py::arg("seq"))
      .def("context_len", &ra::SequenceManager::context_len, py::arg("seq"))
      .def("blocks", &ra::SequenceManager::blocks, py::arg("seq"))
      .def("__contains__", &ra::SequenceManager::contains, py::arg("seq"))
      .def("__len__", &ra::SequenceManager::num_sequences)
      .def(
          "block_tables",
          [](const ra::SequenceManager& sm, const std::vector<ra::SequenceId>& seqs,
             std::int32_t max_blocks_per_seq, py::handle device_obj) {
            const auto device = device_arg(device_obj, "SequenceManager.block_tables");
            const ra::BlockTables t = sm.export_block_tables(seqs, max_blocks_per_seq);
            return py::make_tuple(
                int32_tensor(t.block_tables, {t.num_seqs, t.max_blocks_per_seq}, device),
                int32_tensor(t.context_lens, {t.num_seqs}, device));
          },
          py::arg("seqs"), py::kw_only(), py::arg("max_blocks_per_seq") = 0,
          py::arg("device") = py::none(),
          "(block_tables int32 [len(seqs), max_blocks_per_seq], context_lens int32 [len(seqs)]) "
          "of seqs; unused entries are -1. On the CPU, or copied to `device` on its current "
          "stream.")
      .def(
          "take_slot_mapping",
          [](ra::SequenceManager& sm, const std::vector<ra::SequenceId>& seqs,
             py::handle device_obj) {
            const auto device = device_arg(device_obj, "SequenceManager.take_slot_mapping");
            const std::vector<std::int32_t> slots = sm.take_slot_mapping(seqs);
            return int32_tensor(slots, {static_cast<std::int64_t>(slots.size())}, device);
          },
          py::arg("seqs"), py::kw_only(), py::arg("device") = py::none(),
          "Slots (block * block_size + offset) of the tokens added since the last take, in "
          "seqs order: where to write their K/V (key_cache.view(-1, heads, dim)[slots] = k).");
  bind_prefix_cache_members(cls);
}

}  // namespace

void bind_cache(py::module_& m) {
  bind_allocator(m);
  bind_tree(m);
  bind_sequences(m);
}

}  // namespace radix_attention_torch
