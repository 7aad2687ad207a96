#pragma once
/// @file
/// Division of non-negative ints by a divisor fixed at launch, as one 32 x 32 -> 64-bit
/// multiply and a shift (Granlund & Montgomery, "Division by invariant integers using
/// multiplication", 1994; CUTLASS's FastDivmod is the same idea). A runtime `n / d` compiles to
/// about twenty dependent instructions on sm_80/sm_90 (a float reciprocal and two fix-ups); on a
/// kernel whose threads each move one 16-byte packet, that chain sits between a load's return
/// and the store it addresses.

#include <cstdint>

namespace radix_attention::detail {

/// n / d and n % d for 0 <= n < 2^31 and a fixed 1 <= d < 2^31 (host checks keep the kernels'
/// operands in that range: slots and row items are non-negative ints).
///
/// With c = ceil(log2 d), p = 31 + c and m = ceil(2^p / d): m * d = 2^p + e with 0 <= e < d,
/// so n * m / 2^p = n / d + n * e / (d * 2^p), and n * e < 2^31 * 2^c = 2^p makes the second
/// term < 1 / d: too small to carry the floor past the next multiple of 1 / d. m < 2^32 for
/// every such d (d = 1: m = 2^31, p = 31).
struct FastDivmod {
  std::uint32_t multiplier = 1;
  std::uint32_t shift = 0;
  int divisor = 1;

  FastDivmod() = default;

  /// Host side, once per launch. Precondition: 1 <= d (the launchers check it).
  explicit FastDivmod(int d) : divisor(d) {
    std::uint32_t c = 0;
    while ((std::uint64_t{1} << c) < static_cast<std::uint64_t>(d)) ++c;
    shift = 31 + c;
    // A power of two (block sizes, chunks per head) needs no division: m = 2^p / 2^c = 2^31.
    multiplier = (d & (d - 1)) == 0
                     ? std::uint32_t{1} << 31
                     : static_cast<std::uint32_t>(((std::uint64_t{1} << shift) + d - 1) / d);
  }

  /// n / d (0 <= n < 2^31).
  __host__ __device__ __forceinline__ int div(int n) const {
    return static_cast<int>(
        (static_cast<std::uint64_t>(static_cast<std::uint32_t>(n)) * multiplier) >> shift);
  }

  /// n % d, given q = div(n).
  __host__ __device__ __forceinline__ int mod(int n, int q) const { return n - q * divisor; }
};

}  // namespace radix_attention::detail
