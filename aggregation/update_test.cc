#include "aggregation/update.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::aggregation {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

std::vector<int64_t> HeldIndices(const CoordinateMask& m) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < m.size(); ++i) {
    if (m.held(i)) out.push_back(i);
  }
  return out;
}

TEST(CoordinateMaskTest, PrefixOfAMatrixIsTheLeadingBlock) {
  // 3 × 4 matrix, tier keeps 2 rows × 3 columns (HeteroFL: first ⌈r·c⌉ of each dim).
  auto m = CoordinateMask::Prefix({3, 4}, {2, 3});
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(HeldIndices(*m), (std::vector<int64_t>{0, 1, 2, 4, 5, 6}));
  EXPECT_EQ(m->CountHeld(), 6);
}

TEST(CoordinateMaskTest, PrefixOfAConvKernelAndAVector) {
  auto conv = CoordinateMask::Prefix({2, 2, 2, 3}, {1, 2, 2, 2});  // [out, kh, kw, in]
  ASSERT_THAT(conv, IsOk());
  EXPECT_EQ(HeldIndices(*conv), (std::vector<int64_t>{0, 1, 3, 4, 6, 7, 9, 10}));
  auto bias = CoordinateMask::Prefix({100}, {70});
  ASSERT_THAT(bias, IsOk());
  EXPECT_EQ(bias->CountHeld(), 70);
  EXPECT_TRUE(bias->held(69));
  EXPECT_FALSE(bias->held(70));
  auto none = CoordinateMask::Prefix({5, 5}, {0, 5});
  ASSERT_THAT(none, IsOk());
  EXPECT_EQ(none->CountHeld(), 0);
}

TEST(CoordinateMaskTest, PrefixRejectsBadExtents) {
  EXPECT_THAT(CoordinateMask::Prefix({3, 4}, {2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("rank")));
  EXPECT_THAT(CoordinateMask::Prefix({3, 4}, {2, 5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("dimension 1")));
}

TEST(CoordinateMaskTest, FromIndicesAndWords) {
  auto m = CoordinateMask::FromIndices(130, {0, 64, 129, 64});
  ASSERT_THAT(m, IsOk());
  EXPECT_EQ(HeldIndices(*m), (std::vector<int64_t>{0, 64, 129}));
  EXPECT_THAT(CoordinateMask::FromIndices(130, {130}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("130")));
  auto w = CoordinateMask::FromWords(130, m->words());
  ASSERT_THAT(w, IsOk());
  EXPECT_EQ(*w, *m);
  EXPECT_THAT(CoordinateMask::FromWords(130, {0, 0}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("words")));
  EXPECT_THAT(CoordinateMask::FromWords(130, {0, 0, uint64_t{1} << 5}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("past")));
  EXPECT_EQ(CoordinateMask(70, /*all_held=*/true).CountHeld(), 70);
}

}  // namespace
}  // namespace fedge::aggregation
