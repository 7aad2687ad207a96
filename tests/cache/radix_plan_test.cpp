// RadixPlan: validate_radix_plan accepts a valid plan and reports every kind of error it checks
// (each message names the field).

#include "radix_attention/plan/radix_plan.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ra = radix_attention;

namespace {

// Queries 0 and 1 share [0, 32) through row 0 (two chunks); query 0 has a private [32, 40),
// query 1 a private [32, 50); query 2 has context 0.
ra::RadixPlan valid_plan() {
  ra::RadixPlan p;
  p.num_queries = 3;
  p.chunk_row = {0, 0, 0, 1};
  p.chunk_token_begin = {0, 16, 32, 32};
  p.chunk_token_end = {16, 32, 40, 50};
  p.chunk_query_indptr = {0, 2, 4, 5, 6};
  p.chunk_queries = {0, 1, 0, 1, 0, 1};  // partials 0..5
  p.query_partial_indptr = {0, 3, 6, 6};
  p.query_partials = {0, 2, 4, 1, 3, 5};
  p.chunk_segment = {0, 0, 1, 2};
  p.num_segments = 3;
  p.batch_fingerprint = 0x0123456789abcdefull;
  return p;
}

const std::vector<std::int32_t> kLens{40, 50, 0};

// Expects validate to throw InvalidArgument with `needle` in the message.
void expect_rejected(const ra::RadixPlan& p, const std::string& needle,
                     const std::vector<std::int32_t>& lens = kLens) {
  try {
    ra::validate_radix_plan(p, lens);
    ADD_FAILURE() << "accepted; expected an error mentioning " << needle;
  } catch (const ra::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

struct Case {
  const char* name;
  std::function<void(ra::RadixPlan&)> mutate;
  const char* needle;
};

TEST(RadixPlanValidate, ValidPlanPasses) {
  EXPECT_NO_THROW(ra::validate_radix_plan(valid_plan(), kLens));
  ra::RadixPlan empty;
  EXPECT_NO_THROW(ra::validate_radix_plan(empty, {}));
}

TEST(RadixPlanValidate, ContextLensSize) {
  expect_rejected(valid_plan(), "context_lens.size()", {40, 50});
}

TEST(RadixPlanValidate, EveryReportedError) {
  const std::vector<Case> cases = {
      {"begin size", [](ra::RadixPlan& p) { p.chunk_token_begin.pop_back(); },
       "plan.chunk_token_begin.size()"},
      {"end size", [](ra::RadixPlan& p) { p.chunk_token_end.push_back(1); },
       "plan.chunk_token_end.size()"},
      {"segment size", [](ra::RadixPlan& p) { p.chunk_segment.pop_back(); },
       "plan.chunk_segment.size()"},
      {"chunk indptr size", [](ra::RadixPlan& p) { p.chunk_query_indptr.pop_back(); },
       "plan.chunk_query_indptr"},
      {"chunk indptr start", [](ra::RadixPlan& p) { p.chunk_query_indptr[0] = 1; },
       "must start at 0"},
      {"chunk indptr order", [](ra::RadixPlan& p) { p.chunk_query_indptr[2] = 1; },
       "must be non-decreasing"},
      {"chunk indptr end", [](ra::RadixPlan& p) { p.chunk_queries.push_back(0); },
       "must end at the number of entries"},
      {"query indptr size", [](ra::RadixPlan& p) { p.query_partial_indptr.pop_back(); },
       "plan.query_partial_indptr"},
      {"query indptr order", [](ra::RadixPlan& p) { p.query_partial_indptr[1] = 7; },
       "must be non-decreasing"},
      {"query partials size",
       [](ra::RadixPlan& p) {
         p.query_partials.push_back(0);
         p.query_partial_indptr.back() = 7;
       },
       "plan.query_partials.size()"},
      {"row range", [](ra::RadixPlan& p) { p.chunk_row[1] = 3; }, "plan.chunk_row[c]"},
      {"negative row", [](ra::RadixPlan& p) { p.chunk_row[1] = -1; }, "plan.chunk_row[c]"},
      {"begin negative", [](ra::RadixPlan& p) { p.chunk_token_begin[0] = -1; },
       "plan.chunk_token_begin[c]"},
      {"empty chunk", [](ra::RadixPlan& p) { p.chunk_token_begin[1] = 32; },
       "plan.chunk_token_begin[c]"},
      {"past the row's context",
       [](ra::RadixPlan& p) {
         p.chunk_row[3] = 0;  // row 0 has 40 tokens, chunk ends at 50
       },
       "past the context length of the chunk's block-table row"},
      {"segment range", [](ra::RadixPlan& p) { p.chunk_segment[2] = 3; }, "plan.chunk_segment[c]"},
      {"segment negative", [](ra::RadixPlan& p) { p.chunk_segment[2] = -1; },
       "plan.chunk_segment[c]"},
      {"query range", [](ra::RadixPlan& p) { p.chunk_queries[5] = 3; }, "plan.chunk_queries[p]"},
      {"query past its context",
       [](ra::RadixPlan& p) {
         p.chunk_queries[5] = 2;  // query 2 has context 0
       },
       "past the context length of a query the chunk serves"},
      {"partial id range", [](ra::RadixPlan& p) { p.query_partials[0] = 6; },
       "must be a partial id"},
      {"partial negative", [](ra::RadixPlan& p) { p.query_partials[0] = -1; },
       "must be a partial id"},
      {"another query's partial", [](ra::RadixPlan& p) { p.query_partials[0] = 1; },
       "belongs to another query"},
      {"merged twice", [](ra::RadixPlan& p) { p.query_partials[1] = 0; }, "is merged twice"},
      {"overlap",
       [](ra::RadixPlan& p) {
         p.chunk_token_begin[2] = 16;  // query 0: [0,16) [16,32) [16,40)
       },
       "leaves a gap or overlap at token 32 of query 0"},
      {"gap",
       [](ra::RadixPlan& p) {
         p.chunk_token_begin[3] = 33;  // query 1: [0,16) [16,32) [33,50)
       },
       "leaves a gap or overlap at token 32 of query 1"},
      {"short coverage",
       [](ra::RadixPlan& p) {
         p.chunk_token_end[2] = 39;  // query 0 covers [0, 39) of 40
       },
       "is not covered exactly"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    ra::RadixPlan p = valid_plan();
    c.mutate(p);
    expect_rejected(p, c.needle);
  }
  // "partial ... is never merged" cannot fire after the checks above: query_partials has one
  // entry per partial, each belongs to a query and none repeats, so every partial is listed.
}

TEST(RadixPlanValidate, QueryWithContextButNoPartials) {
  ra::RadixPlan p = valid_plan();
  expect_rejected(p, "is not covered exactly", {40, 50, 8});
}

}  // namespace
