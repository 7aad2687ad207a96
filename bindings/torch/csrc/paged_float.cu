// paged_decode and merge_states instances for float inputs (one file per type: parallel builds).
#include "launch_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_PAGED(float)
