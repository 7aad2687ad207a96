// CUDA consumer: the umbrella header (kernels + launchers) compiles and links in a user project.
#include <radix_attention/radix_attention.cuh>

#include <cstdio>

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("consumer_cuda: built; no CUDA device to run on\n");
    return 0;
  }
  RADIX_ATTENTION_CUDA_CHECK(cudaDeviceSynchronize());
  std::printf("consumer_cuda: %d CUDA device(s)\n", devices);
  return 0;
}
