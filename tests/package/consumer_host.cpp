// Host-only consumer: the prefix cache from plain C++, no CUDA.
#include <radix_attention/cache.hpp>

#include <cstdio>

int main() {
  radix_attention::BlockAllocator allocator(16);
  auto blocks = allocator.allocate(4);
  allocator.release(blocks);
  std::printf("consumer_host: %d of %d blocks free\n", allocator.num_free(),
              allocator.num_blocks());
  return allocator.num_free() == 16 ? 0 : 1;
}
