#pragma once
// Shared by GPU tests that drive the prefix cache: random token ids.

#include <cstddef>
#include <random>
#include <vector>

#include "radix_attention/cache/radix_tree.hpp"

namespace radix_attention::test {

/// `n` token ids drawn uniformly from [0, 50000] (collisions are rare: prompts stay distinct).
inline std::vector<TokenId> random_tokens(std::mt19937_64& rng, int n) {
  std::uniform_int_distribution<TokenId> dist(0, 50000);
  std::vector<TokenId> out(static_cast<std::size_t>(n));
  for (auto& t : out) t = dist(rng);
  return out;
}

}  // namespace radix_attention::test
