#pragma once
/// @file
/// Optional device-side index checks. Block ids and partial ids come from device memory the
/// host never reads on the hot path, so by default the kernels trust them (validate them on the
/// host with radix_attention::validate_block_tables). Compiling with
/// RADIX_ATTENTION_KERNEL_BOUNDS_CHECK defined makes every kernel trap on an out-of-range id
/// instead of reading arbitrary memory (the launch then fails with cudaErrorLaunchFailure,
/// "unspecified launch failure", on CUDA 13.0 / driver 580).

#ifdef RADIX_ATTENTION_KERNEL_BOUNDS_CHECK
#define RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(cond) \
  do {                                            \
    if (!(cond)) __trap();                        \
  } while (0)
#else
#define RADIX_ATTENTION_DEVICE_CHECK_BOUNDS(cond) ((void)0)
#endif
