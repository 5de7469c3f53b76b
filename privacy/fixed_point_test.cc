#include "privacy/fixed_point.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::privacy {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(FixedPointTest, ScaleKeepsTheSumFromWrapping) {
  auto enc = FixedPointEncoder::Create(0.5, 1000);
  ASSERT_THAT(enc, IsOk());
  std::vector<float> worst(1, 0.5f), neg(1, -7.0f);  // -7 is clamped to -0.5
  std::vector<uint32_t> q(1), qn(1);
  ASSERT_THAT(enc->Encode(worst, absl::MakeSpan(q)), IsOk());
  auto clamped = enc->Encode(neg, absl::MakeSpan(qn));
  ASSERT_THAT(clamped, IsOk());
  EXPECT_EQ(*clamped, 1);
  std::vector<uint32_t> sum(1, 0), nsum(1, 0);
  for (int i = 0; i < 1000; ++i) {
    FixedPointEncoder::AddInPlace(absl::MakeSpan(sum), q);
    FixedPointEncoder::AddInPlace(absl::MakeSpan(nsum), qn);
  }
  std::vector<float> out(1);
  enc->Decode(sum, absl::MakeSpan(out));
  EXPECT_NEAR(out[0], 500.0f, 1e-3);
  enc->Decode(nsum, absl::MakeSpan(out));
  EXPECT_NEAR(out[0], -500.0f, 1e-3);
  EXPECT_GT(static_cast<int32_t>(sum[0]), 0);  // did not wrap
  std::vector<float> nan(1, NAN);
  EXPECT_THAT(enc->Encode(nan, absl::MakeSpan(q)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  EXPECT_THAT(FixedPointEncoder::Create(1.0, 0), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(FixedPointTest, RoundsToNearestWithHalvesAwayFromZero) {
  auto enc = FixedPointEncoder::Create(1.0, 1);
  ASSERT_THAT(enc, IsOk());
  const double s = enc->scale();
  // Values at exact multiples of 1/scale plus a quarter / three quarters of a step.
  const std::vector<float> in = {static_cast<float>(3.25 / s), static_cast<float>(3.75 / s),
                                 static_cast<float>(-3.25 / s), static_cast<float>(-3.75 / s)};
  std::vector<uint32_t> q(4);
  ASSERT_THAT(enc->Encode(in, absl::MakeSpan(q)), IsOk());
  EXPECT_EQ(static_cast<int32_t>(q[0]), 3);
  EXPECT_EQ(static_cast<int32_t>(q[1]), 4);
  EXPECT_EQ(static_cast<int32_t>(q[2]), -3);
  EXPECT_EQ(static_cast<int32_t>(q[3]), -4);
  // Decoding a single value is within half a step of it.
  std::vector<float> back(4);
  enc->Decode(q, absl::MakeSpan(back));
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(back[i], in[i], 0.5 / s + 1e-12);
}

}  // namespace
}  // namespace fedge::privacy
