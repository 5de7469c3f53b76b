#include "client/grpc/backoff.h"

#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::client {
namespace {

using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

TEST(BackoffTest, DelaysDoubleWithinJitterBoundsUpToTheCap) {
  Backoff b(BackoffOptions{}, 7);
  double nominal = 0.5;
  for (int k = 0; k < 20; ++k) {
    const double d = absl::ToDoubleSeconds(b.NextDelay());
    EXPECT_GE(d, 0.5 * nominal) << "attempt " << k;
    EXPECT_LE(d, 1.5 * nominal) << "attempt " << k;
    nominal = std::min(30.0, nominal * 2);
  }
  // After 20 attempts the nominal delay is the cap.
  EXPECT_DOUBLE_EQ(nominal, 30.0);
}

TEST(BackoffTest, JitterSpreadsDelaysAcrossTheRange) {
  // Many devices with different seeds must not pick the same delay.
  double lo = 1e9, hi = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    Backoff b(BackoffOptions{}, seed);
    const double d = absl::ToDoubleSeconds(b.NextDelay());
    lo = std::min(lo, d);
    hi = std::max(hi, d);
  }
  EXPECT_LT(lo, 0.35);  // the range is [0.25, 0.75]
  EXPECT_GT(hi, 0.65);
}

TEST(BackoffTest, SameSeedSameScheduleAndResetStartsOver) {
  Backoff a(BackoffOptions{}, 3), b(BackoffOptions{}, 3);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(a.NextDelay(), b.NextDelay());
  a.Reset();
  EXPECT_EQ(a.attempt(), 0);
  EXPECT_LE(a.NextDelay(), absl::Milliseconds(750));
}

TEST(BackoffTest, NoJitterIsExact) {
  BackoffOptions o;
  o.jitter = 0;
  o.initial = absl::Seconds(1);
  o.max = absl::Seconds(5);
  Backoff b(o, 0);
  EXPECT_EQ(b.NextDelay(), absl::Seconds(1));
  EXPECT_EQ(b.NextDelay(), absl::Seconds(2));
  EXPECT_EQ(b.NextDelay(), absl::Seconds(4));
  EXPECT_EQ(b.NextDelay(), absl::Seconds(5));
  for (int k = 0; k < 2000; ++k) b.NextDelay();  // no overflow after many attempts
  EXPECT_EQ(b.NextDelay(), absl::Seconds(5));
}

TEST(BackoffTest, RejectsImpossibleOptions) {
  BackoffOptions o;
  o.jitter = 1.5;
  EXPECT_THAT(ValidateBackoffOptions(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("jitter")));
  o = BackoffOptions{};
  o.max = absl::Milliseconds(100);
  EXPECT_THAT(ValidateBackoffOptions(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("max")));
  o = BackoffOptions{};
  o.multiplier = 0.5;
  EXPECT_THAT(ValidateBackoffOptions(o), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("multiplier")));
}

}  // namespace
}  // namespace fedge::client
