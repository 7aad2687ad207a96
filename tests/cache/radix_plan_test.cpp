// RadixPlan: validate_radix_plan accepts a valid plan and reports every kind of error it checks
// (each message names the field); packing into one int32 buffer and back.

#include "radix_attention/cache/radix_plan.hpp"

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

TEST(RadixPlanPack, RoundTripAndLayout) {
  const ra::RadixPlan plan = valid_plan();
  const ra::PackedRadixPlan packed = ra::pack_radix_plan(plan);
  const auto& d = packed.data;
  ASSERT_EQ(d.size(), static_cast<std::size_t>(packed.layout.total_words));
  EXPECT_EQ(packed.bytes(), d.size() * 4);
  EXPECT_EQ(d[ra::kPackedWordMagic], ra::kPackedPlanMagic);
  EXPECT_EQ(d[ra::kPackedWordVersion], ra::kPackedPlanVersion);
  EXPECT_EQ(d[ra::kPackedWordHeaderWords], packed.layout.header_words);
  EXPECT_EQ(d[ra::kPackedWordNumArrays], ra::kNumPlanArrays);
  EXPECT_EQ(d[ra::kPackedWordNumQueries], 3);
  EXPECT_EQ(d[ra::kPackedWordNumChunks], 4);
  EXPECT_EQ(d[ra::kPackedWordNumPartials], 6);
  EXPECT_EQ(d[ra::kPackedWordNumSegments], 3);
  EXPECT_EQ(static_cast<std::uint32_t>(d[ra::kPackedWordFingerprintLo]), 0x89abcdefu);
  EXPECT_EQ(static_cast<std::uint32_t>(d[ra::kPackedWordFingerprintHi]), 0x01234567u);
  EXPECT_EQ(d[ra::kPackedWordTotalWords], packed.layout.total_words);
  EXPECT_EQ(packed.layout.header_words % ra::kPackedPlanAlignWords, 0);
  for (std::int32_t i = 0; i < ra::kNumPlanArrays; ++i) {
    const auto a = static_cast<std::size_t>(i);
    EXPECT_EQ(d[static_cast<std::size_t>(ra::kPackedWordOffsets + i)], packed.layout.offset[a]);
    EXPECT_EQ(d[static_cast<std::size_t>(ra::kPackedWordOffsets + ra::kNumPlanArrays + i)],
              packed.layout.size[a]);
    EXPECT_EQ(packed.layout.offset[a] % ra::kPackedPlanAlignWords, 0);
    EXPECT_GE(packed.layout.offset[a], packed.layout.header_words);
  }
  const std::int32_t* rows = packed.array(ra::PlanArray::chunk_row);
  EXPECT_EQ(std::vector<std::int32_t>(rows, rows + 4), plan.chunk_row);
  const std::int32_t* qp = packed.array(ra::PlanArray::query_partials);
  EXPECT_EQ(std::vector<std::int32_t>(qp, qp + 6), plan.query_partials);
  EXPECT_EQ(packed.layout.size_of(ra::PlanArray::chunk_query_indptr), 5);

  const ra::RadixPlan back = ra::unpack_radix_plan(d.data(), d.size());
  EXPECT_EQ(back.num_queries, plan.num_queries);
  EXPECT_EQ(back.num_segments, plan.num_segments);
  EXPECT_EQ(back.batch_fingerprint, plan.batch_fingerprint);
  EXPECT_EQ(back.chunk_row, plan.chunk_row);
  EXPECT_EQ(back.chunk_token_begin, plan.chunk_token_begin);
  EXPECT_EQ(back.chunk_token_end, plan.chunk_token_end);
  EXPECT_EQ(back.chunk_query_indptr, plan.chunk_query_indptr);
  EXPECT_EQ(back.chunk_queries, plan.chunk_queries);
  EXPECT_EQ(back.query_partial_indptr, plan.query_partial_indptr);
  EXPECT_EQ(back.query_partials, plan.query_partials);
  EXPECT_EQ(back.chunk_segment, plan.chunk_segment);
  EXPECT_NO_THROW(ra::validate_radix_plan(back, kLens));
}

TEST(RadixPlanPack, IntoCallerBufferChecksCapacityAndWritesNothingOnError) {
  const ra::RadixPlan plan = valid_plan();
  const ra::PackedPlanLayout layout = ra::packed_plan_layout(plan);
  std::vector<std::int32_t> buffer(static_cast<std::size_t>(layout.total_words), 77);
  EXPECT_THROW(ra::pack_radix_plan_into(plan, buffer.data(), buffer.size() - 1), ra::CapacityError);
  EXPECT_EQ(buffer, std::vector<std::int32_t>(buffer.size(), 77));
  EXPECT_THROW(ra::pack_radix_plan_into(plan, nullptr, 1000), ra::InvalidArgument);
  const ra::PackedPlanLayout written = ra::pack_radix_plan_into(plan, buffer.data(), buffer.size());
  EXPECT_EQ(written.offset, layout.offset);
  EXPECT_EQ(buffer, ra::pack_radix_plan(plan).data);
}

TEST(RadixPlanPack, UnpackRejectsWhatIsNotAPackedPlan) {
  std::vector<std::int32_t> d = ra::pack_radix_plan(valid_plan()).data;
  EXPECT_THROW(ra::unpack_radix_plan(nullptr, 10), ra::InvalidArgument);
  EXPECT_THROW(ra::unpack_radix_plan(d.data(), 5), ra::InvalidArgument);
  auto bad = d;
  bad[ra::kPackedWordMagic] = 0;
  EXPECT_THROW(ra::unpack_radix_plan(bad.data(), bad.size()), ra::InvalidArgument);
  bad = d;
  bad[ra::kPackedWordVersion] = 99;
  EXPECT_THROW(ra::unpack_radix_plan(bad.data(), bad.size()), ra::InvalidArgument);
  bad = d;
  bad[ra::kPackedWordNumArrays] = 1;
  EXPECT_THROW(ra::unpack_radix_plan(bad.data(), bad.size()), ra::InvalidArgument);
  bad = d;
  bad[ra::kPackedWordOffsets + 2] = static_cast<std::int32_t>(d.size());  // array past the end
  EXPECT_THROW(ra::unpack_radix_plan(bad.data(), bad.size()), ra::InvalidArgument);
  EXPECT_THROW(ra::unpack_radix_plan(d.data(), d.size() - 4), ra::InvalidArgument);
}

TEST(RadixPlanPack, EmptyPlan) {
  ra::RadixPlan plan;
  plan.query_partial_indptr = {0};
  const auto packed = ra::pack_radix_plan(plan);
  const ra::RadixPlan back = ra::unpack_radix_plan(packed.data.data(), packed.data.size());
  EXPECT_EQ(back.chunk_query_indptr, std::vector<std::int32_t>{0});
  EXPECT_EQ(back.query_partial_indptr, std::vector<std::int32_t>{0});
  EXPECT_NO_THROW(ra::validate_radix_plan(back, {}));
}

}  // namespace
