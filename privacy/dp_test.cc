#include "privacy/dp.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::privacy {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

Seed TestSeed(uint8_t b) {
  Seed s;
  s.fill(b);
  return s;
}

TEST(DpTest, ClipScalesAllTensorsToTheNormAndReturnsThePreClipNorm) {
  std::vector<float> a = {3.0f, 0.0f}, b = {0.0f, 4.0f, 0.0f};  // global norm 5
  std::vector<absl::Span<float>> update = {absl::MakeSpan(a), absl::MakeSpan(b)};
  auto norm = ClipToL2Norm(update, 1.0);
  ASSERT_THAT(norm, IsOk());
  EXPECT_NEAR(*norm, 5.0, 1e-12);
  EXPECT_NEAR(GlobalL2Norm(update), 1.0, 1e-6);
  EXPECT_NEAR(a[0], 0.6f, 1e-6);  // direction kept
  EXPECT_NEAR(b[1], 0.8f, 1e-6);
}

TEST(DpTest, ClipLeavesAnUpdateInsideTheBallUnchanged) {
  std::vector<float> a = {0.3f, -0.4f};
  std::vector<absl::Span<float>> update = {absl::MakeSpan(a)};
  auto norm = ClipToL2Norm(update, 1.0);
  ASSERT_THAT(norm, IsOk());
  EXPECT_NEAR(*norm, 0.5, 1e-7);
  EXPECT_EQ(a[0], 0.3f);
  EXPECT_EQ(a[1], -0.4f);
}

TEST(DpTest, ClipRejectsNonFiniteValuesAndBadNorms) {
  std::vector<float> a = {1.0f, NAN};
  std::vector<absl::Span<float>> update = {absl::MakeSpan(a)};
  EXPECT_THAT(ClipToL2Norm(update, 1.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("non-finite")));
  EXPECT_EQ(a[0], 1.0f);
  std::vector<float> c = {1.0f};
  std::vector<absl::Span<float>> ok = {absl::MakeSpan(c)};
  EXPECT_THAT(ClipToL2Norm(ok, 0.0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("clip norm")));
  EXPECT_THAT(DistributedNoiseStddev(1.0, 1.0, 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("threshold")));
}

// Sample mean and std of 400k draws: the std estimate has relative s.e. 1/sqrt(2n) ≈ 0.11%,
// so 1% is > 9 s.e.; the mass within 1σ (0.6827) has s.e. 0.0007.
TEST(DpTest, NoiseHasTheRequestedStddev) {
  auto gen = NoiseGenerator::CreateFromSeed(TestSeed(7));
  const double stddev = 2.5;
  std::vector<float> v(400000, 0.0f);
  gen->AddGaussianNoise(absl::MakeSpan(v), stddev);
  double sum = 0, sq = 0;
  int64_t within = 0;
  for (float x : v) {
    sum += x;
    sq += static_cast<double>(x) * x;
    within += std::fabs(x) <= stddev;
  }
  const double n = v.size(), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 5 * stddev / std::sqrt(n));
  EXPECT_NEAR(sd, stddev, 0.01 * stddev);
  EXPECT_NEAR(within / n, 0.682689, 0.005);
}

TEST(DpTest, SeededGeneratorIsDeterministicAndOsSeededOnesDiffer) {
  auto a = NoiseGenerator::CreateFromSeed(TestSeed(1));
  auto b = NoiseGenerator::CreateFromSeed(TestSeed(1));
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a->StandardNormal(), b->StandardNormal());
  auto c = NoiseGenerator::Create();
  auto d = NoiseGenerator::Create();
  ASSERT_THAT(c, IsOk());
  ASSERT_THAT(d, IsOk());
  EXPECT_NE((*c)->StandardNormal(), (*d)->StandardNormal());
}

// Distributed mode: 10 clients, threshold 7; the sum of the 7 survivors' shares has std z·S,
// and all 10 together have std z·S·sqrt(10/7).
TEST(DpTest, DistributedSharesSumToTheCentralStddevAtThreshold) {
  const double z = 1.2, S = 0.5;
  auto share = DistributedNoiseStddev(z, S, 7);
  ASSERT_THAT(share, IsOk());
  EXPECT_NEAR(*share, z * S / std::sqrt(7.0), 1e-15);
  const size_t m = 100000;
  std::vector<double> sum7(m, 0.0), sum10(m, 0.0);
  for (int c = 0; c < 10; ++c) {
    auto gen = NoiseGenerator::CreateFromSeed(TestSeed(static_cast<uint8_t>(100 + c)));
    std::vector<float> noise(m, 0.0f);
    gen->AddGaussianNoise(absl::MakeSpan(noise), *share);
    for (size_t i = 0; i < m; ++i) {
      if (c < 7) sum7[i] += noise[i];
      sum10[i] += noise[i];
    }
  }
  auto sd = [](const std::vector<double>& v) {
    double s = 0, q = 0;
    for (double x : v) s += x, q += x * x;
    return std::sqrt(q / v.size() - (s / v.size()) * (s / v.size()));
  };
  EXPECT_NEAR(sd(sum7), z * S, 0.015 * z * S);
  EXPECT_NEAR(sd(sum10), z * S * std::sqrt(10.0 / 7.0), 0.015 * z * S);
}

// Andrew et al.: with norms drawn from a fixed distribution, C converges to the γ-quantile.
// Norms are log-normal (median e^0 = 1, 0.8-quantile e^{0.8416·0.5} ≈ 1.523); 100 clients a
// round, σ_b = m/20 as in the paper, η = 0.2, from C⁰ = 0.1.
TEST(DpTest, AdaptiveClippingConvergesToTheTargetQuantile) {
  for (double gamma : {0.5, 0.8}) {
    const double true_quantile = gamma == 0.5 ? 1.0 : std::exp(0.841621 * 0.5);
    AdaptiveClipping::Options o;
    o.initial_clip_norm = 0.1;
    o.target_quantile = gamma;
    o.learning_rate = 0.2;
    o.clipped_count_stddev = 100 / 20.0;
    auto clip = AdaptiveClipping::Create(o);
    ASSERT_THAT(clip, IsOk());
    auto noise = NoiseGenerator::CreateFromSeed(TestSeed(3));
    base::Rng rng(42);
    double late_sum = 0;
    int late = 0;
    for (int round = 0; round < 400; ++round) {
      int64_t unclipped = 0;
      for (int c = 0; c < 100; ++c) {
        const double norm = std::exp(0.5 * rng.Normal());
        unclipped += norm <= (*clip)->clip_norm();
      }
      ASSERT_THAT((*clip)->Update(unclipped, 100, *noise), IsOk());
      if (round >= 300) late_sum += (*clip)->clip_norm(), ++late;
    }
    EXPECT_NEAR(late_sum / late, true_quantile, 0.1 * true_quantile) << "gamma " << gamma;
  }
}

TEST(DpTest, AdaptiveClippingErrorsAndNoiseMultiplierSplit) {
  AdaptiveClipping::Options o;
  o.target_quantile = 1.0;
  EXPECT_THAT(AdaptiveClipping::Create(o),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("quantile")));
  o.target_quantile = 0.5;
  o.clipped_count_stddev = 5.0;
  auto clip = AdaptiveClipping::Create(o);
  ASSERT_THAT(clip, IsOk());
  auto noise = NoiseGenerator::CreateFromSeed(TestSeed(4));
  EXPECT_THAT((*clip)->Update(11, 10, *noise),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("11 unclipped of 10")));
  EXPECT_EQ((*clip)->clip_norm(), 0.1);
  // z = 1: z_Δ = (1 − 1/100)^(−1/2).
  auto zd = (*clip)->UpdateNoiseMultiplier(1.0);
  ASSERT_THAT(zd, IsOk());
  EXPECT_NEAR(*zd, 1.0 / std::sqrt(0.99), 1e-12);
  EXPECT_THAT((*clip)->UpdateNoiseMultiplier(20.0),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("too small")));
}

}  // namespace
}  // namespace fedge::privacy
