#pragma once
// Small helpers shared by the host tests of the cache layer: token sequences and the message of
// the error an operation throws.

#include <numeric>
#include <string>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"
#include "radix_attention/core/error.hpp"

namespace cache_test {

namespace ra = radix_attention;

// Tokens first, first+1, ... (n of them).
inline std::vector<ra::TokenId> iota_tokens(std::size_t n, ra::TokenId first = 1) {
  std::vector<ra::TokenId> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

inline std::vector<ra::TokenId> concat(std::vector<ra::TokenId> a,
                                       const std::vector<ra::TokenId>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The message of the library error `f` throws, or "" if it throws none.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const ra::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace cache_test
