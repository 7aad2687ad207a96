// The radix_attention_torch._C extension module: exceptions, host-side cache classes, planner,
// kernels. The Python package radix_attention_torch re-exports it and adds radix_attention().
#include <torch/extension.h>

#include "bindings.hpp"
#include "errors.hpp"

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "PyTorch binding of radix_attention: paged prefill, paged / shared-prefix decode "
      "attention, the KV-cache writers and the radix-tree prefix cache.";
  radix_attention_torch::register_exceptions(m);
  radix_attention_torch::bind_cache(m);
  radix_attention_torch::bind_planner(m);
  radix_attention_torch::bind_reference(m);
  radix_attention_torch::bind_ops(m);
  radix_attention_torch::bind_prefill(m);
  radix_attention_torch::bind_kv_write(m);
}
