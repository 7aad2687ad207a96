#pragma once
/// @file
/// Host int32 arrays (block tables, context lengths, slot mappings) as tensors, optionally
/// copied to a CUDA device on its current stream through pinned memory.

#include <ATen/ATen.h>
#include <torch/extension.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "errors.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention_torch {

/// @brief A device argument: None, a torch.device, a string ("cuda", "cuda:1", "cpu") or a CUDA
/// device index. (torch's own caster accepts torch.device objects only.)
/// @throw ArgumentTypeError for anything else; InvalidArgument for a malformed string.
inline std::optional<at::Device> device_arg(const pybind11::handle& obj, const char* fn) {
  namespace py = pybind11;
  if (obj.is_none()) return std::nullopt;
  if (py::isinstance<py::str>(obj)) {
    const std::string name = obj.cast<std::string>();
    try {
      return at::Device(name);
    } catch (const std::exception&) {
      throw radix_attention::InvalidArgument(std::string(fn) + ": device = '" + name +
                                             "': not a device string (e.g. 'cuda', 'cuda:0')");
    }
  }
  if (py::isinstance<py::int_>(obj) && !py::isinstance<py::bool_>(obj)) {
    const long long index = obj.cast<long long>();
    if (index < 0 || index > 127) {
      throw radix_attention::InvalidArgument(
          std::string(fn) + ": device = " + std::to_string(index) + ": not a CUDA device index");
    }
    return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  try {
    return obj.cast<at::Device>();
  } catch (const py::cast_error&) {
    throw ArgumentTypeError(std::string(fn) +
                            ": device must be None, a torch.device, a string or an index");
  }
}

/// @brief `values` as an int32 tensor of `shape`: on the CPU when `device` is empty or a CPU
/// device, else copied (asynchronously, from pinned memory, on the device's current stream).
inline at::Tensor int32_tensor(const std::vector<std::int32_t>& values,
                               const std::vector<std::int64_t>& shape,
                               const std::optional<at::Device>& device) {
  const bool to_cuda = device.has_value() && device->is_cuda();
  at::TensorOptions options = at::TensorOptions().dtype(at::kInt);
  if (to_cuda) options = options.pinned_memory(true);
  at::Tensor host = at::empty(shape, options);
  if (!values.empty()) {
    std::memcpy(host.data_ptr<std::int32_t>(), values.data(), values.size() * sizeof(std::int32_t));
  }
  if (!to_cuda) return host;
  // The pinned caching allocator records this copy's stream, so the staging block is not
  // reused before the copy has read it.
  return host.to(*device, /*non_blocking=*/true);
}

/// @brief Token ids from a Python object: a 1-D integer CPU tensor or any sequence of ints.
/// @throw ArgumentTypeError for anything else; InvalidArgument for an id outside int32.
inline std::vector<std::int32_t> token_ids(const pybind11::handle& obj, const char* fn,
                                           const char* arg) {
  namespace py = pybind11;
  if (THPVariable_Check(obj.ptr())) {
    const at::Tensor t = THPVariable_Unpack(obj.ptr());
    if (t.dim() != 1 || t.is_cuda() ||
        !at::isIntegralType(t.scalar_type(), /*includeBool=*/false)) {
      throw ArgumentTypeError(std::string(fn) + ": " + arg +
                              " must be a 1-D integer CPU tensor or a sequence of ints");
    }
    if (t.scalar_type() == at::kLong && t.numel() > 0) {
      const auto lo = t.min().item<std::int64_t>();
      const auto hi = t.max().item<std::int64_t>();
      if (lo < INT32_MIN || hi > INT32_MAX) {
        throw radix_attention::InvalidArgument(std::string(fn) + ": " + arg +
                                               ": token ids must fit in int32");
      }
    }
    const at::Tensor c = t.to(at::kInt).contiguous();
    const std::int32_t* p = c.data_ptr<std::int32_t>();
    return std::vector<std::int32_t>(p, p + c.numel());
  }
  try {
    return obj.cast<std::vector<std::int32_t>>();
  } catch (const py::cast_error&) {
    throw ArgumentTypeError(std::string(fn) + ": " + arg +
                            " must be a sequence of int32 token ids or a 1-D integer CPU tensor");
  }
}

}  // namespace radix_attention_torch
