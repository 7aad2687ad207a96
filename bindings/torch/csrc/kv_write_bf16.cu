// kv_append (into a __nv_bfloat16 or an fp8 e4m3 cache) and copy_blocks instances for __nv_bfloat16
// (one file per type: parallel builds).
#include "launch_kv_write_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_KV_WRITE(__nv_bfloat16)
