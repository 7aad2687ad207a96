# CUDA settings of this project's own targets (tests, benchmarks, examples). Consumers keep their
# own; for them the kernels' headers stop an sm_7x device compilation with one #error
# (core/arch.cuh).

# radix_attention_check_cuda_architectures(): a FATAL_ERROR, before anything compiles, unless
# every entry of CMAKE_CUDA_ARCHITECTURES is sm_80 or newer. The kernels use bf16 mma.sync,
# cp.async and ldmatrix, which sm_7x lacks; without this check such a build fails late with
# thousands of lines of ptxas errors.
function(radix_attention_check_cuda_architectures)
  set(archs "${CMAKE_CUDA_ARCHITECTURES}")
  if(archs STREQUAL "native")
    # CMake resolved "native" when it enabled CUDA; empty where no GPU is visible (nothing to
    # check then: nvcc reports it).
    set(archs "${CMAKE_CUDA_ARCHITECTURES_NATIVE}")
    if(archs STREQUAL "")
      return()
    endif()
  endif()
  set(too_old "")
  if(NOT archs OR archs MATCHES "^all(-major)?$")
    # OFF leaves the choice to nvcc's default (older than sm_80); "all" and "all-major" include
    # sm_50 .. sm_75.
    set(too_old "${archs}")
  else()
    foreach(arch IN LISTS archs)
      # 80, 86, 89, 90a, 100f, 120a-real, 90-virtual ...
      if(arch MATCHES "^([0-9]+)[a-z]?(-real|-virtual)?$")
        if(CMAKE_MATCH_1 LESS 80)
          list(APPEND too_old "${arch}")
        endif()
      endif()
    endforeach()
  endif()
  if(NOT too_old STREQUAL "")
    message(FATAL_ERROR
      "radix_attention: CMAKE_CUDA_ARCHITECTURES = '${CMAKE_CUDA_ARCHITECTURES}' includes "
      "'${too_old}', older than sm_80. The kernels need sm_80 or newer (bf16 mma.sync, "
      "cp.async). Set -DCMAKE_CUDA_ARCHITECTURES (or CUDAARCHS) to e.g. 80 (A100), 86, 89, "
      "90a (H100/H200) or a list of these; the default is 80;90a.")
  endif()
endfunction()
