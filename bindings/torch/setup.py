"""Builds radix_attention_torch._C against the installed torch (CUDA extension).

The C++ library is header-only: its include/ directory (two levels up, the repository's) is the
only include path needed; nothing is copied. Without TORCH_CUDA_ARCH_LIST the extension is
compiled for sm_90 (H100/H200) only; set e.g. TORCH_CUDA_ARCH_LIST="8.0;9.0" for other GPUs.
MAX_JOBS bounds the parallel compile jobs (ninja).
"""
import os

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))
# RADIX_ATTENTION_INCLUDE overrides the header location (e.g. an installed copy of the library).
INCLUDE = os.environ.get("RADIX_ATTENTION_INCLUDE") or os.path.normpath(
    os.path.join(HERE, "..", "..", "include"))
if not os.path.isfile(os.path.join(INCLUDE, "radix_attention", "radix_attention.cuh")):
    raise RuntimeError(
        f"radix_attention headers not found at {INCLUDE}: build from the repository checkout "
        "(pip install --no-build-isolation ./bindings/torch)")

# Must be set before torch.utils.cpp_extension computes the -gencode flags.
os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")

from torch.utils.cpp_extension import BuildExtension, CUDAExtension  # noqa: E402

CSRC = os.path.join("csrc")
SOURCES = [
    "module.cpp", "errors.cpp", "cache_bindings.cpp", "planner_bindings.cpp", "ops_bindings.cpp",
    "prefill_bindings.cpp", "kv_write_bindings.cpp", "reference_bindings.cpp",
    "launch_dispatch.cpp",
    # One .cu per (operation, dtype): the kernel instances build in parallel.
    "paged_float.cu", "paged_half.cu", "paged_bf16.cu",
    "radix_float.cu", "radix_half.cu", "radix_bf16.cu",
    "prefill_float.cu", "prefill_half.cu", "prefill_bf16.cu",
    "kv_write_float.cu", "kv_write_half.cu", "kv_write_bf16.cu",
]

# torch passes -D__CUDA_NO_HALF_OPERATORS__ (and friends) to nvcc by default; the library's
# kernels use the regular half / bfloat16 operators and conversions.
NVCC_FLAGS = [
    "-O3", "-lineinfo",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_HALF2_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
]
# Default symbol visibility, as torch's own extension builds use: with -fvisibility=hidden the
# module would get private copies of inline statics that must be shared with libtorch.
CXX_FLAGS = ["-O3"]
# Link the C++ runtime dynamically, by its soname. Where a toolchain would otherwise pull in the
# static libstdc++.a (a missing libstdc++.so development link, or -static-libstdc++ in its specs),
# the module would carry a second, uninitialised copy of the C++ runtime next to the one libtorch
# uses, and the first std::ostream formatting inside the module (every error message) crashes.
# Resolving against libstdc++.so.6 first leaves nothing for the static archive to supply.
LINK_FLAGS = ["-l:libstdc++.so.6"]

setup(
    ext_modules=[
        CUDAExtension(
            name="radix_attention_torch._C",
            sources=[os.path.join(CSRC, s) for s in SOURCES],
            include_dirs=[INCLUDE, os.path.join(HERE, CSRC)],
            extra_compile_args={"cxx": CXX_FLAGS, "nvcc": NVCC_FLAGS},
            extra_link_args=LINK_FLAGS,
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
