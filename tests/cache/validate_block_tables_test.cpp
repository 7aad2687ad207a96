#include "radix_attention/cache/validate_block_tables.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

namespace radix_attention {
namespace {

// Two sequences, row stride 4 (3 usable entries), block size 2, 10 blocks.
struct Tables {
  std::vector<std::int32_t> table{3, 9, 0, -1, /*row 1:*/ 5, -7, -7, -7};
  std::vector<std::int32_t> lens{5, 2};
  void check() const { validate_block_tables(table.data(), 4, lens.data(), 2, 3, 2, 10); }
};

TEST(ValidateBlockTables, AcceptsValidTablesAndIgnoresEntriesPastTheContext) {
  Tables t;
  EXPECT_NO_THROW(t.check());  // row 1 uses one entry; its -7s are never read
  t.lens = {0, 0};
  EXPECT_NO_THROW(t.check());
  EXPECT_NO_THROW(validate_block_tables(nullptr, 1, nullptr, 0, 1, 1, 1));
}

TEST(ValidateBlockTables, RejectsOutOfRangeBlockIds) {
  Tables t;
  t.table[2] = 10;
  try {
    t.check();
    FAIL() << "no throw";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("block_tables[0][2] = 10"), std::string::npos) << e.what();
  }
  t.table[2] = 0;
  t.lens[1] = 3;  // now uses row 1 entry 1 = -7
  EXPECT_THROW(t.check(), InvalidArgument);
}

TEST(ValidateBlockTables, RejectsBadContextLengthsAndShapes) {
  Tables t;
  t.lens[0] = 7;  // capacity 3 * 2 = 6
  EXPECT_THROW(t.check(), InvalidArgument);
  t.lens[0] = -1;
  EXPECT_THROW(t.check(), InvalidArgument);
  t.lens[0] = 5;
  EXPECT_THROW(validate_block_tables(t.table.data(), 2, t.lens.data(), 2, 3, 2, 10),
               InvalidArgument);
  EXPECT_THROW(validate_block_tables(t.table.data(), 4, t.lens.data(), 2, 3, 0, 10),
               InvalidArgument);
  EXPECT_THROW(validate_block_tables(nullptr, 4, t.lens.data(), 2, 3, 2, 10), InvalidArgument);
}

}  // namespace
}  // namespace radix_attention
