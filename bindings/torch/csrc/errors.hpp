#pragma once
/// @file
/// How C++ failures become Python exceptions. The library's typed errors map onto a Python
/// hierarchy rooted at radix_attention_torch.Error (a RuntimeError):
///
///   radix_attention::InvalidArgument -> InvalidArgument(Error, ValueError)
///   radix_attention::CapacityError   -> CapacityError(Error, MemoryError)
///   radix_attention::StateError      -> StateError(Error)
///   radix_attention::CudaError       -> CudaError(Error)
///   ArgumentTypeError (this binding) -> ArgumentTypeError(Error, TypeError)
///
/// so `except ValueError` / `except MemoryError` work for callers that do not know the library,
/// and `except radix_attention_torch.Error` catches everything it raises.

#include <pybind11/pybind11.h>

#include <stdexcept>

namespace radix_attention_torch {

/// @brief A tensor argument of the wrong kind (dtype, or not a tensor at all): Python TypeError.
class ArgumentTypeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief Creates the exception classes in `m` and registers the C++ -> Python translation.
void register_exceptions(pybind11::module_& m);

}  // namespace radix_attention_torch
