#include "privacy/shamir.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::privacy {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(ShamirFieldTest, ArithmeticModMersenne61) {
  const uint64_t p = kShamirPrime;
  EXPECT_EQ(FieldAdd(p - 1, 1), 0u);
  EXPECT_EQ(FieldSub(0, 1), p - 1);
  EXPECT_EQ(FieldMul(p - 1, p - 1), 1u);  // (−1)² = 1
  EXPECT_EQ(FieldMul(uint64_t{1} << 60, 2), 1u);  // 2^61 ≡ 1
  for (uint64_t a : {uint64_t{1}, uint64_t{2}, uint64_t{12345678901234567}, p - 2}) {
    EXPECT_EQ(FieldMul(a, FieldInv(a)), 1u) << a;
  }
}

// Every t-subset of n = 6 shares reconstructs the secret, for each t.
TEST(ShamirTest, EveryThresholdSubsetReconstructs) {
  const std::vector<uint64_t> secret = {0, 1, kShamirPrime - 1, 0x0123456789abcdefull % kShamirPrime};
  const std::vector<uint64_t> xs = {1, 2, 3, 4, 5, 6};
  for (int t = 1; t <= 6; ++t) {
    auto shares = ShamirSplit(secret, t, xs);
    ASSERT_THAT(shares, IsOk());
    int subsets = 0;
    for (unsigned mask = 0; mask < 64; ++mask) {
      if (__builtin_popcount(mask) != t) continue;
      std::vector<ShamirShare> pick;
      for (int i = 0; i < 6; ++i) {
        if (mask & (1u << i)) pick.push_back((*shares)[i]);
      }
      auto got = ShamirReconstruct(pick, t);
      ASSERT_THAT(got, IsOk());
      EXPECT_EQ(*got, secret) << "t=" << t << " mask=" << mask;
      ++subsets;
    }
    EXPECT_GT(subsets, 0);
  }
}

// t − 1 shares, interpolated as if they were enough, give a value unrelated to the secret.
TEST(ShamirTest, FewerThanThresholdSharesRevealAWrongValue) {
  const std::vector<uint64_t> secret = {42, 7};
  auto shares = ShamirSplit(secret, 3, std::vector<uint64_t>{1, 2, 3, 4, 5});
  ASSERT_THAT(shares, IsOk());
  std::vector<ShamirShare> two = {(*shares)[0], (*shares)[3]};
  auto wrong = ShamirReconstruct(two, 2);
  ASSERT_THAT(wrong, IsOk());
  EXPECT_NE((*wrong)[0], 42u);
  EXPECT_NE((*wrong)[1], 7u);
  EXPECT_THAT(ShamirReconstruct(two, 3),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("need at least 3")));
}

TEST(ShamirTest, RejectsDuplicateAndZeroPoints) {
  EXPECT_THAT(ShamirSplit(std::vector<uint64_t>{1}, 2, std::vector<uint64_t>{1, 1, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  EXPECT_THAT(ShamirSplit(std::vector<uint64_t>{1}, 2, std::vector<uint64_t>{0, 1, 2}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("[1, p)")));
  EXPECT_THAT(ShamirSplit(std::vector<uint64_t>{1}, 4, std::vector<uint64_t>{1, 2, 3}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threshold")));
  auto shares = ShamirSplit(std::vector<uint64_t>{9}, 2, std::vector<uint64_t>{1, 2, 3});
  ASSERT_THAT(shares, IsOk());
  std::vector<ShamirShare> dup = {(*shares)[0], (*shares)[0]};
  EXPECT_THAT(ShamirReconstruct(dup, 2),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
}

TEST(ShamirTest, DetectsATamperedShareWhenAnExtraShareIsGiven) {
  auto shares = ShamirSplit(std::vector<uint64_t>{5, 6}, 3, std::vector<uint64_t>{1, 2, 3, 4});
  ASSERT_THAT(shares, IsOk());
  std::vector<ShamirShare> all = *shares;
  EXPECT_THAT(ShamirReconstruct(all, 3), IsOk());
  all[1].y[1] = FieldAdd(all[1].y[1], 1);
  EXPECT_THAT(ShamirReconstruct(all, 3),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("one polynomial")));
}

TEST(ShamirTest, ReconstructorReusesCoefficientsAndChecksPoints) {
  auto shares = ShamirSplit(std::vector<uint64_t>{11, 12, 13}, 3,
                            std::vector<uint64_t>{10, 20, 30, 40});
  ASSERT_THAT(shares, IsOk());
  auto r = ShamirReconstructor::Create(std::vector<uint64_t>{20, 30, 40});
  ASSERT_THAT(r, IsOk());
  std::vector<ShamirShare> pick = {(*shares)[1], (*shares)[2], (*shares)[3]};
  auto got = r->Reconstruct(pick);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(*got, (std::vector<uint64_t>{11, 12, 13}));
  std::swap(pick[0], pick[1]);
  EXPECT_THAT(r->Reconstruct(pick),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("expected 20")));
}

TEST(ShamirTest, BytesRoundTripAndWrongReconstructionIsCaught) {
  std::vector<uint8_t> seed(32);
  for (int i = 0; i < 32; ++i) seed[i] = static_cast<uint8_t>(255 - i * 3);
  std::vector<uint64_t> el = BytesToFieldElements(seed);
  EXPECT_EQ(el.size(), 5u);
  auto back = FieldElementsToBytes(el, 32);
  ASSERT_THAT(back, IsOk());
  EXPECT_EQ(*back, seed);
  // Shares of the seed; replacing one share's values with junk makes the t-share
  // reconstruction a random field element, which no longer decodes.
  auto shares = ShamirSplit(el, 2, std::vector<uint64_t>{1, 2, 3});
  ASSERT_THAT(shares, IsOk());
  std::vector<ShamirShare> pick = {(*shares)[0], (*shares)[2]};
  pick[1].y[0] = FieldAdd(pick[1].y[0], 123456789);
  auto bad = ShamirReconstruct(pick, 2);
  ASSERT_THAT(bad, IsOk());
  EXPECT_THAT(FieldElementsToBytes(*bad, 32),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not decode")));
  EXPECT_THAT(FieldElementsToBytes(el, 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("elements")));
}

}  // namespace
}  // namespace fedge::privacy
