// kv_append (into a float or an fp8 e4m3 cache) and copy_blocks instances for float (one file
// per type: parallel builds).
#include "launch_kv_write_impl.cuh"

RADIX_ATTENTION_TORCH_INSTANTIATE_KV_WRITE(float)

namespace radix_attention_torch::typed {

void copy_blocks_fp8(const CopyBlocksArgs& args) { copy_blocks_as<__nv_fp8_e4m3>(args); }

}  // namespace radix_attention_torch::typed
