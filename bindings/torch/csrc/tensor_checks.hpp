#pragma once
/// @file
/// Checks of tensor arguments. Every failure names the function and the argument and describes
/// the tensor it got: a wrong dtype raises ArgumentTypeError (a Python TypeError), anything else
/// (device, shape, strides, sizes) radix_attention::InvalidArgument (a Python ValueError).

#include <ATen/ATen.h>

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "errors.hpp"
#include "radix_attention/core/error.hpp"

namespace radix_attention_torch {

/// @brief "Tensor(shape=[2, 8], stride=[8, 1], dtype=Int, device=cuda:0)".
inline std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::ostringstream s;
  s << "Tensor(shape=" << t.sizes() << ", stride=" << t.strides()
    << ", dtype=" << c10::toString(t.scalar_type()) << ", device=" << t.device() << ")";
  return s.str();
}

/// Builds the messages of one function's checks: "<fn>: <arg> = <tensor>: <requirement>".
class ArgChecker {
 public:
  explicit ArgChecker(const char* fn) : fn_(fn) {}

  [[noreturn]] void fail_value(const char* arg, const at::Tensor& t,
                               const std::string& requirement) const {
    throw radix_attention::InvalidArgument(message(arg, t, requirement));
  }
  [[noreturn]] void fail_type(const char* arg, const at::Tensor& t,
                              const std::string& requirement) const {
    throw ArgumentTypeError(message(arg, t, requirement));
  }
  /// A relation between plain values: "<fn>: <what>".
  void expect(bool condition, const std::string& what) const {
    if (!condition) throw radix_attention::InvalidArgument(std::string(fn_) + ": " + what);
  }

  /// On a CUDA device; if `ref` is defined, on the same device as `ref` (named `ref_name`).
  void cuda(const char* arg, const at::Tensor& t, const at::Tensor& ref = at::Tensor(),
            const char* ref_name = "query") const {
    if (!t.defined()) fail_value(arg, t, "must be a tensor");
    if (!t.is_cuda()) fail_value(arg, t, "must be a CUDA tensor");
    if (ref.defined() && t.device() != ref.device()) {
      std::ostringstream s;
      s << "must be on the same device as " << ref_name << " (" << ref.device() << ")";
      fail_value(arg, t, s.str());
    }
  }

  void dtype(const char* arg, const at::Tensor& t, at::ScalarType expected) const {
    if (t.scalar_type() != expected) {
      fail_type(arg, t, std::string("must have dtype ") + c10::toString(expected));
    }
  }

  void dtype_in(const char* arg, const at::Tensor& t,
                std::initializer_list<at::ScalarType> allowed) const {
    for (at::ScalarType a : allowed) {
      if (t.scalar_type() == a) return;
    }
    std::string list;
    for (at::ScalarType a : allowed)
      list += (list.empty() ? "" : ", ") + std::string(c10::toString(a));
    fail_type(arg, t, "must have one of the dtypes " + list);
  }

  void same_dtype(const char* arg, const at::Tensor& t, const at::Tensor& ref,
                  const char* ref_name) const {
    if (t.scalar_type() != ref.scalar_type()) {
      fail_type(arg, t,
                std::string("must have the dtype of ") + ref_name + " (" +
                    c10::toString(ref.scalar_type()) + ")");
    }
  }

  void dim(const char* arg, const at::Tensor& t, std::int64_t ndim, const char* layout) const {
    if (t.dim() != ndim) {
      fail_value(arg, t, "must be " + std::to_string(ndim) + "-D " + layout);
    }
  }

  void contiguous(const char* arg, const at::Tensor& t) const {
    if (!t.is_contiguous()) fail_value(arg, t, "must be contiguous (call .contiguous())");
  }

  void shape(const char* arg, const at::Tensor& t, const std::vector<std::int64_t>& expected,
             const std::string& meaning) const {
    if (t.sizes() != at::IntArrayRef(expected)) {
      std::ostringstream s;
      s << "must have shape " << at::IntArrayRef(expected) << " " << meaning;
      fail_value(arg, t, s.str());
    }
  }

  void size(const char* arg, const at::Tensor& t, std::int64_t d, std::int64_t expected,
            const std::string& meaning) const {
    if (t.size(d) != expected) {
      fail_value(
          arg, t,
          "size(" + std::to_string(d) + ") must be " + std::to_string(expected) + " " + meaning);
    }
  }

  /// An extent the kernels index with int.
  int to_int(const char* what, std::int64_t value) const {
    expect(value >= 0 && value <= std::numeric_limits<int>::max(),
           std::string(what) + " = " + std::to_string(value) + ": must fit in int32");
    return static_cast<int>(value);
  }

  const char* fn() const { return fn_; }

 private:
  std::string message(const char* arg, const at::Tensor& t, const std::string& req) const {
    return std::string(fn_) + ": " + arg + " = " + describe(t) + ": " + req;
  }

  const char* fn_;
};

}  // namespace radix_attention_torch
