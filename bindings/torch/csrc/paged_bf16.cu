// paged_decode and merge_states instances for __nv_bfloat16 inputs (one file per type: parallel
// builds).
#include "launch_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_PAGED(__nv_bfloat16)
