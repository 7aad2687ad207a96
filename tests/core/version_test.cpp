// The version macros agree with the CMake project's version (read from the same header by
// CMakeLists.txt; this catches a header the regex no longer parses as intended) and with each
// other.
#include "radix_attention/version.hpp"

#include <gtest/gtest.h>

#include <string>

namespace {

TEST(Version, MatchesTheCMakeProject) {
  EXPECT_EQ(std::string(RADIX_ATTENTION_VERSION_STRING), RADIX_ATTENTION_PROJECT_VERSION);
}

TEST(Version, StringAndNumberAgreeWithTheParts) {
  const std::string expected = std::to_string(RADIX_ATTENTION_VERSION_MAJOR) + "." +
                               std::to_string(RADIX_ATTENTION_VERSION_MINOR) + "." +
                               std::to_string(RADIX_ATTENTION_VERSION_PATCH);
  EXPECT_EQ(RADIX_ATTENTION_VERSION_STRING, expected);
  static_assert(RADIX_ATTENTION_VERSION == RADIX_ATTENTION_VERSION_MAJOR * 10000 +
                                               RADIX_ATTENTION_VERSION_MINOR * 100 +
                                               RADIX_ATTENTION_VERSION_PATCH);
  static_assert(RADIX_ATTENTION_VERSION_MINOR < 100 && RADIX_ATTENTION_VERSION_PATCH < 100,
                "RADIX_ATTENTION_VERSION packs two decimal digits per part");
}

}  // namespace
