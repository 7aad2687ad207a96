// paged_prefill instances for float inputs (one file per type: parallel builds).
#include "launch_prefill_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_PREFILL(float)
