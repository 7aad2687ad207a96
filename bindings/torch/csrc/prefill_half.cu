// paged_prefill instances for __half inputs (one file per type: parallel builds).
#include "launch_prefill_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_PREFILL(__half)
