// radix_decode instances for float inputs (one file per type: parallel builds).
#include "launch_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_RADIX(float)

namespace radix_attention_torch {

std::size_t radix_decode_workspace(const radix_attention::DeviceRadixPlan& plan, int num_q_heads,
                                   int head_dim) {
  return radix_attention::radix_decode_workspace_bytes(plan, num_q_heads, head_dim);
}

}  // namespace radix_attention_torch
