// Python exception classes and the C++ -> Python translation (see errors.hpp).
#include "errors.hpp"

#include <string>

#include "radix_attention/core/error.hpp"

namespace py = pybind11;

namespace radix_attention_torch {
namespace {

// Owned references, alive for the interpreter's lifetime (the module holds them too).
PyObject* g_error = nullptr;
PyObject* g_invalid_argument = nullptr;
PyObject* g_capacity_error = nullptr;
PyObject* g_state_error = nullptr;
PyObject* g_cuda_error = nullptr;
PyObject* g_argument_type_error = nullptr;

PyObject* make_exception(py::module_& m, const char* name, py::tuple bases, const char* doc) {
  const std::string qualified = std::string("radix_attention_torch.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  m.add_object(name, py::handle(type));  // the module takes its own reference
  return type;
}

}  // namespace

void register_exceptions(py::module_& m) {
  py::handle runtime_error(PyExc_RuntimeError);
  g_error = make_exception(m, "Error", py::make_tuple(runtime_error),
                           "Base of every exception radix_attention_torch raises.");
  py::handle error(g_error);
  g_invalid_argument =
      make_exception(m, "InvalidArgument", py::make_tuple(error, py::handle(PyExc_ValueError)),
                     "An argument violates a documented precondition (message names it).");
  g_capacity_error = make_exception(
      m, "CapacityError", py::make_tuple(error, py::handle(PyExc_MemoryError)),
      "A fixed-capacity resource (the KV block pool, a workspace) cannot satisfy a request. "
      "Recoverable: evict from the RadixTree or finish sequences, then retry.");
  g_state_error = make_exception(m, "StateError", py::make_tuple(error),
                                 "The operation is not valid in the object's current state "
                                 "(a stale plan, unlocking an unlocked node, ...).");
  g_cuda_error = make_exception(m, "CudaError", py::make_tuple(error),
                                "A CUDA runtime call failed (message: file:line, error name).");
  g_argument_type_error =
      make_exception(m, "ArgumentTypeError", py::make_tuple(error, py::handle(PyExc_TypeError)),
                     "A tensor argument has the wrong dtype or kind.");

  py::register_local_exception_translator([](std::exception_ptr p) {
    // A class missing (never expected) degrades to RuntimeError instead of a NULL type.
    auto raise = [](PyObject* type, const std::exception& e) {
      PyErr_SetString(type != nullptr ? type : PyExc_RuntimeError, e.what());
    };
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ArgumentTypeError& e) {
      raise(g_argument_type_error, e);
    } catch (const radix_attention::InvalidArgument& e) {
      raise(g_invalid_argument, e);
    } catch (const radix_attention::CapacityError& e) {
      raise(g_capacity_error, e);
    } catch (const radix_attention::StateError& e) {
      raise(g_state_error, e);
    } catch (const radix_attention::CudaError& e) {
      raise(g_cuda_error, e);
    } catch (const radix_attention::Error& e) {
      raise(g_error, e);
    }
  });
}

}  // namespace radix_attention_torch
