// The cache writers over tensors: kv_append (new tokens' K/V into their slots, optionally
// quantised to fp8 e4m3) and copy_blocks (a fork's block copies). Each checks every tensor
// argument and runs on the tensors' device and its current CUDA stream.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "bindings.hpp"
#include "kv_tensors.hpp"
#include "launch.hpp"
#include "tensor_checks.hpp"

namespace py = pybind11;

namespace radix_attention_torch {
namespace {

/// [num_tokens, num_kv_heads, head_dim] rows with unit stride along head_dim; returns the
/// (token, head) element strides, 0 where the extent is 1.
std::pair<std::int64_t, std::int64_t> new_row_strides(const ArgChecker& c, const char* name,
                                                      const at::Tensor& t) {
  c.dim(name, t, 3, "[num_tokens, num_kv_heads, head_dim]");
  if (t.size(2) > 1 && t.stride(2) != 1) {
    c.fail_value(name, t, "must have unit stride along head_dim (stride(2) == 1)");
  }
  if ((t.size(0) > 1 && t.stride(0) <= 0) || (t.size(1) > 1 && t.stride(1) <= 0)) {
    c.fail_value(name, t, "strides must be positive (no expanded / broadcast dimensions)");
  }
  return {view_stride(t, 0), view_stride(t, 1)};
}

/// An optional fp8 scale tensor: float32 on key's device, 1 or num_kv_heads elements.
const float* scale_ptr(const ArgChecker& c, const char* name, const std::optional<at::Tensor>& s,
                       const at::Tensor& key, std::int64_t num_kv_heads, bool& per_head) {
  if (!s.has_value()) return nullptr;
  c.cuda(name, *s, key, "key");
  c.dtype(name, *s, at::kFloat);
  c.contiguous(name, *s);
  if (s->numel() != 1 && s->numel() != num_kv_heads) {
    c.fail_value(name, *s,
                 "must have 1 element (per tensor) or num_kv_heads = " +
                     std::to_string(num_kv_heads) + " (per kv head)");
  }
  if (s->numel() == num_kv_heads && num_kv_heads > 1) per_head = true;
  return s->data_ptr<float>();
}

void kv_append_py(const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
                  const at::Tensor& value_cache, const at::Tensor& slot_mapping,
                  const std::optional<at::Tensor>& k_scale,
                  const std::optional<at::Tensor>& v_scale,
                  const std::optional<at::Tensor>& nonfinite_count) {
  const ArgChecker c("kv_append");
  c.cuda("key", key);
  c.dtype_in("key", key, {at::kFloat, at::kHalf, at::kBFloat16});
  const auto strides = new_row_strides(c, "key", key);
  c.cuda("value", value, key, "key");
  c.same_dtype("value", value, key, "key");
  if (value.sizes() != key.sizes()) c.fail_value("value", value, "must have the shape of key");
  const auto v_strides = new_row_strides(c, "value", value);
  if (v_strides != strides) {
    c.fail_value("value", value, "must have the strides of key (one pair describes both)");
  }

  KvAppendArgs a;
  a.cache = kv_cache_args(c, key_cache, value_cache, key, "key");
  const bool fp8 = key_cache.scalar_type() == at::kFloat8_e4m3fn;
  if (!fp8) {
    c.same_dtype("key_cache", key_cache, key, "key (or torch.float8_e4m3fn)");
  }
  c.size("key_cache", key_cache, 2, key.size(1), "(num_kv_heads of key)");
  c.size("key_cache", key_cache, 3, key.size(2), "(head_dim of key)");

  c.cuda("slot_mapping", slot_mapping, key, "key");
  c.dtype("slot_mapping", slot_mapping, at::kInt);
  c.shape("slot_mapping", slot_mapping, {key.size(0)}, "([num_tokens])");
  c.contiguous("slot_mapping", slot_mapping);

  bool per_head = false;
  if (fp8) {
    const std::int64_t heads = key.size(1);
    bool k_per_head = false;
    bool v_per_head = false;
    a.k_scale = scale_ptr(c, "k_scale", k_scale, key, heads, k_per_head);
    a.v_scale = scale_ptr(c, "v_scale", v_scale, key, heads, v_per_head);
    // One mode describes both scale arrays; a missing one means scale 1 in either mode.
    c.expect(!(k_scale.has_value() && v_scale.has_value()) || k_per_head == v_per_head,
             "k_scale and v_scale must both be per tensor (1 element) or both per kv head");
    per_head = k_per_head || v_per_head;
    if (nonfinite_count.has_value()) {
      c.cuda("nonfinite_count", *nonfinite_count, key, "key");
      c.dtype("nonfinite_count", *nonfinite_count, at::kInt);
      c.shape("nonfinite_count", *nonfinite_count, {1}, "([1])");
      a.nonfinite_count = nonfinite_count->data_ptr<int>();
    }
  } else {
    c.expect(!k_scale.has_value() && !v_scale.has_value() && !nonfinite_count.has_value(),
             "k_scale, v_scale and nonfinite_count apply to a torch.float8_e4m3fn cache only");
  }

  a.in_dtype = to_dtype(key.scalar_type());
  a.cache_dtype = to_cache_dtype(key_cache.scalar_type());
  a.k = key.data_ptr();
  a.v = value.data_ptr();
  a.num_tokens = c.to_int("key.size(0)", key.size(0));
  a.token_stride = strides.first;
  a.head_stride = strides.second;
  a.slot_mapping = slot_mapping.data_ptr<std::int32_t>();
  a.per_head_scales = per_head;
  const c10::cuda::CUDAGuard guard(key.device());
  a.stream = at::cuda::getCurrentCUDAStream(key.device().index()).stream();
  kv_append(a);
}

void copy_blocks_py(const at::Tensor& key_cache, const at::Tensor& value_cache,
                    const at::Tensor& copies) {
  const ArgChecker c("copy_blocks");
  c.cuda("key_cache", key_cache);
  c.dtype_in("key_cache", key_cache, {at::kFloat, at::kHalf, at::kBFloat16, at::kFloat8_e4m3fn});
  CopyBlocksArgs a;
  a.cache = kv_cache_args(c, key_cache, value_cache, key_cache, "key_cache");
  c.cuda("copies", copies, key_cache, "key_cache");
  c.dtype("copies", copies, at::kInt);
  c.dim("copies", copies, 2,
        "[num_copies, 2] (src, dst) or [num_copies, 3] (src, dst, num_tokens)");
  if (copies.size(1) != 2 && copies.size(1) != 3) {
    c.fail_value("copies", copies,
                 "size(1) must be 2 (src, dst) or 3 (src, dst, num_tokens: a BlockCopy list)");
  }
  c.contiguous("copies", copies);
  a.dtype = to_cache_dtype(key_cache.scalar_type());
  a.copies = copies.data_ptr<std::int32_t>();
  a.num_copies = c.to_int("copies.size(0)", copies.size(0));
  a.copy_width = static_cast<int>(copies.size(1));
  const c10::cuda::CUDAGuard guard(key_cache.device());
  a.stream = at::cuda::getCurrentCUDAStream(key_cache.device().index()).stream();
  copy_blocks(a);
}

}  // namespace

void bind_kv_write(py::module_& m) {
  m.def("kv_append", &kv_append_py, py::arg("key"), py::arg("value"), py::arg("key_cache"),
        py::arg("value_cache"), py::arg("slot_mapping"), py::kw_only(),
        py::arg("k_scale") = py::none(), py::arg("v_scale") = py::none(),
        py::arg("nonfinite_count") = py::none(),
        R"doc(Writes the new tokens' K and V rows into their paged-cache slots, in one launch.

Token t goes to slot s = slot_mapping[t] = block * block_size + offset: key[t] into
key_cache[block, offset], value[t] into value_cache[block, offset]. A negative slot is padding:
nothing is written for it. Nothing outside the targeted slots is written. A cache of key's
dtype receives the bits unchanged; a torch.float8_e4m3fn cache receives e4m3(x / scale)
(round to nearest even, saturating at +-448, NaN kept), NaN/Inf inputs counted in
nonfinite_count when given.

Args:
  key, value: [num_tokens, num_kv_heads, head_dim] float32 / float16 / bfloat16, CUDA, unit
    stride along head_dim, the same strides for both (slices of a fused QKV output are fine).
  key_cache, value_cache: [num_blocks, block_size, num_kv_heads, head_dim] of key's dtype or
    torch.float8_e4m3fn; unit stride along head_dim, any other (non-overlapping) strides, the
    same for both (NHD, HND as hnd.transpose(1, 2), halves of a combined tensor).
  slot_mapping: int32 [num_tokens]; each slot negative or < num_blocks * block_size, no slot
    twice (device data, not checked: validate a host copy first where it is untrusted).
  k_scale, v_scale: fp8 cache only: float32 CUDA tensors of 1 element (per tensor) or
    num_kv_heads (per kv head); omitted = 1.
  nonfinite_count: fp8 cache only: int32 [1] CUDA tensor the kernel adds the number of
    NaN/Inf input elements to (never reset).
Returns: None. Runs on the current CUDA stream of key's device.)doc");

  m.def("copy_blocks", &copy_blocks_py, py::arg("key_cache"), py::arg("value_cache"),
        py::arg("copies"),
        R"doc(Copies whole blocks (or their first tokens) of the K and V caches.

Args:
  key_cache, value_cache: as in kv_append (float32 / float16 / bfloat16 / float8_e4m3fn).
  copies: int32 CUDA, contiguous: [num_copies, 2] (src, dst) pairs copy every offset of block
    src into block dst; [num_copies, 3] (src, dst, num_tokens) rows (SequenceManager.fork's
    BlockCopy list) copy the first num_tokens offsets. Ids in [0, num_blocks), no destination
    twice, no destination that another copy reads (device data, not checked). The copies run
    concurrently.
Returns: None. Runs on the current CUDA stream of key_cache's device.)doc");
}

}  // namespace radix_attention_torch
