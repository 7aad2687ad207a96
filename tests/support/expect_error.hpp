#pragma once
// Shared by the argument-validation tests: expects a call to throw a typed error whose message
// names the argument (contains `needle`, e.g. "q_row_stride = 1000").

#include <gtest/gtest.h>

#include <string>

namespace radix_attention::test {

template <class Error, class Call>
void expect_error(Call&& call, const char* needle) {
  try {
    call();
    ADD_FAILURE() << "no throw for " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

}  // namespace radix_attention::test
