// radix_decode instances for __half inputs (one file per type: parallel builds).
#include "launch_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_RADIX(__half)
