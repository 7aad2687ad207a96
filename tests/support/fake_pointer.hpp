#pragma once
// Shared by the launcher validation tests: a non-null, 16-byte aligned "device pointer" that is
// never dereferenced (every argument check runs before any CUDA call, so these tests need no
// GPU). Pass another address to make one misaligned.

#include <cstdint>

namespace radix_attention::test {

template <class T>
T* fake_ptr(std::uintptr_t addr = 4096) {
  return reinterpret_cast<T*>(addr);
}

}  // namespace radix_attention::test
