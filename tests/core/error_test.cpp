#include "radix_attention/core/error.hpp"

#include <gtest/gtest.h>

#include <string>

namespace radix_attention {
namespace {

TEST(Expects, PassesWhenConditionHolds) { EXPECT_NO_THROW(expects(true, "n", 3, "must be >= 0")); }

TEST(Expects, MessageNamesArgumentAndValue) {
  try {
    expects(false, "num_blocks", -4, "must be >= 1");
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()), "radix_attention: num_blocks = -4: must be >= 1");
  }
}

TEST(Expects, ThrowsTheRequestedTypeUnderError) {
  EXPECT_THROW(expects<CapacityError>(false, "n", 9, "exceeds the pool"), CapacityError);
  EXPECT_THROW(expects<StateError>(false, "seq", 2, "is finished"), Error);
  EXPECT_THROW(expects_that<StateError>(false, "plan is stale"), StateError);
}

TEST(ExpectsThat, ConcatenatesParts) {
  try {
    expects_that(false, "num_q_heads = ", 6, " is not a multiple of num_kv_heads = ", 4);
    FAIL() << "no exception";
  } catch (const InvalidArgument& e) {
    EXPECT_EQ(std::string(e.what()),
              "radix_attention: num_q_heads = 6 is not a multiple of num_kv_heads = 4");
  }
}

}  // namespace
}  // namespace radix_attention
