#include "server/round_privacy.h"

#include <cmath>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"

namespace fedge::server {
namespace {

using ::fedge::testing::IsOk;
using ::fedge::testing::StatusIs;
using ::testing::HasSubstr;

v1::PrivacyConfig Central(double clip, double z) {
  v1::PrivacyConfig p;
  p.set_clip_norm(clip);
  p.set_noise_multiplier(z);
  p.set_delta(1e-5);
  return p;
}

aggregation::ModelDelta ZeroDelta(size_t n, double participants) {
  aggregation::ModelDelta d;
  aggregation::Tensor t;
  t.name = "w";
  t.shape = {static_cast<int64_t>(n)};
  t.values.assign(n, 0.0f);
  d.tensors.push_back(std::move(t));
  d.total_weight = participants;
  return d;
}


TEST(RoundPrivacyTest, UpdatesOverTheClipNormAreRefused) {
  auto dp = RoundPrivacy::Create(Central(1.0, 0), "job", 1);
  ASSERT_THAT(dp.status(), IsOk());
  auto open = (*dp)->Open(1, 10, 100, 0);
  ASSERT_THAT(open.status(), IsOk());
  EXPECT_EQ(open->round.clip_norm, 1.0);
  EXPECT_THAT((*dp)->CheckClipped(1.0, "a", open->round), IsOk());
  EXPECT_THAT((*dp)->CheckClipped(1.00005, "a", open->round), IsOk());  // rounding
  EXPECT_THAT((*dp)->CheckClipped(1.01, "a", open->round),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("over privacy.clip_norm")));
  // Clipping alone neither accounts nor reweights.
  EXPECT_FALSE((*dp)->accounts());
  EXPECT_EQ((*dp)->Weight(37), 37);
  // No clip norm: nothing to check.
  auto none = RoundPrivacy::Create(v1::PrivacyConfig(), "job", 1);
  ASSERT_THAT(none.status(), IsOk());
  EXPECT_THAT((*none)->CheckClipped(1e6, "a", (*none)->Open(1, 1, 1, 0)->round), IsOk());
}

TEST(RoundPrivacyTest, CentralNoiseHasStddevZCOverParticipantsAndEpsilonGrows) {
  const double clip = 0.5, z = 1.2, m = 8;
  auto dp = RoundPrivacy::Create(Central(clip, z), "job-a", 42);
  ASSERT_THAT(dp.status(), IsOk());
  EXPECT_TRUE((*dp)->accounts());
  EXPECT_EQ((*dp)->Weight(37), 1.0);  // each participant counts once
  auto open = (*dp)->Open(1, 10, 100, 0);
  ASSERT_THAT(open.status(), IsOk());
  EXPECT_DOUBLE_EQ(open->round.sampling_rate, 0.1);
  aggregation::ModelDelta delta = ZeroDelta(200000, m);
  v1::RoundMetrics metrics;
  ASSERT_THAT((*dp)->Close(open->round, /*secure=*/false, 8, delta, &metrics), IsOk());
  double sum = 0, sq = 0;
  for (float v : delta.tensors[0].values) {
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double n = static_cast<double>(delta.tensors[0].values.size());
  const double stddev = std::sqrt(sq / n - (sum / n) * (sum / n));
  EXPECT_NEAR(stddev, z * clip / m, 0.01 * z * clip / m);
  EXPECT_NEAR(sum / n, 0, 3 * z * clip / m / std::sqrt(n));
  EXPECT_GT(metrics.epsilon(), 0);
  EXPECT_EQ(metrics.dp_noise_multiplier(), z);
  EXPECT_EQ(metrics.dp_clip_norm(), clip);
  EXPECT_EQ(metrics.dp_sampling_rate(), 0.1);
  // A second round costs more ε; under secure aggregation the devices add the noise.
  aggregation::ModelDelta quiet = ZeroDelta(1000, m);
  v1::RoundMetrics second;
  ASSERT_THAT((*dp)->Close(open->round, /*secure=*/true, 8, quiet, &second), IsOk());
  EXPECT_GT(second.epsilon(), metrics.epsilon());
  for (float v : quiet.tensors[0].values) ASSERT_EQ(v, 0.0f);
}

TEST(RoundPrivacyTest, SeededNoiseRepeatsPerJobAndDiffersBetweenJobs) {
  auto noise_of = [](const std::string& job) {
    auto dp = std::move(RoundPrivacy::Create(Central(1, 1), job, 7)).value();
    aggregation::ModelDelta d = ZeroDelta(16, 1);
    v1::RoundMetrics m;
    EXPECT_THAT(dp->Close(dp->Open(1, 1, 10, 0)->round, false, 1, d, &m), IsOk());
    return d.tensors[0].values;
  };
  EXPECT_EQ(noise_of("job-a"), noise_of("job-a"));
  EXPECT_NE(noise_of("job-a"), noise_of("job-b"));
}

TEST(RoundPrivacyTest, TheBudgetStopsTheRoundThatWouldExceedIt) {
  v1::PrivacyConfig p = Central(1, 1);
  p.set_epsilon_budget(3);
  auto dp = std::move(RoundPrivacy::Create(p, "job", 1)).value();
  int rounds = 0;
  for (; rounds < 1000; ++rounds) {
    auto open = dp->Open(rounds + 1, 10, 100, rounds);
    ASSERT_THAT(open.status(), IsOk());
    if (open->over_budget.has_value()) {
      EXPECT_THAT(*open->over_budget, HasSubstr("over the budget 3"));
      break;
    }
    aggregation::ModelDelta d = ZeroDelta(1, 10);
    v1::RoundMetrics m;
    ASSERT_THAT(dp->Close(open->round, false, 10, d, &m), IsOk());
    EXPECT_LE(m.epsilon(), 3);
  }
  EXPECT_GT(rounds, 1);
  EXPECT_LT(rounds, 1000);
}

TEST(RoundPrivacyTest, AdaptiveClippingFollowsTheReportedNormsAndResumes) {
  v1::PrivacyConfig p = Central(1.0, 1.0);
  p.mutable_adaptive_clipping()->set_target_quantile(0.5);
  p.mutable_adaptive_clipping()->set_learning_rate(0.2);
  p.mutable_adaptive_clipping()->set_count_noise_stddev(0.6);
  auto dp = std::move(RoundPrivacy::Create(p, "job", 3)).value();
  EXPECT_TRUE(dp->clipped_count());
  std::vector<v1::RoundRecord> records;
  double clip = 1.0;
  for (int r = 1; r <= 5; ++r) {
    auto open = dp->Open(r, 50, 500, r - 1);
    ASSERT_THAT(open.status(), IsOk());
    EXPECT_DOUBLE_EQ(open->round.clip_norm, clip);
    RoundPrivacy::Round round = open->round;
    // Every device's update is far within C: C shrinks.
    for (int i = 0; i < 50; ++i) RoundPrivacy::CountMeasuredNorm(0.01, round);
    RoundPrivacy::CountMeasuredNorm(std::nan(""), round);  // ignored
    RoundPrivacy::CountMeasuredNorm(-1, round);           // ignored
    RoundPrivacy::CountMeasuredNorm(clip, round);         // clipped: arrived at C
    EXPECT_EQ(round.unclipped, 50);
    aggregation::ModelDelta d = ZeroDelta(4, 50);
    v1::RoundRecord rec;
    rec.set_round(r);
    rec.set_state(v1::ROUND_STATE_COMPLETED);
    ASSERT_THAT(dp->Close(round, false, 50, d, rec.mutable_metrics()), IsOk());
    EXPECT_LT(rec.metrics().dp_next_clip_norm(), clip);
    EXPECT_GT(rec.metrics().dp_unclipped_fraction(), 0.5);
    clip = rec.metrics().dp_next_clip_norm();
    records.push_back(rec);
  }
  // A restarted job continues from the last round's clip norm and ε.
  auto resumed = std::move(RoundPrivacy::Create(p, "job", 3)).value();
  ASSERT_THAT(resumed->Restore(records, 5), IsOk());
  auto open = resumed->Open(6, 50, 500, 5);
  ASSERT_THAT(open.status(), IsOk());
  EXPECT_DOUBLE_EQ(open->round.clip_norm, clip);
  aggregation::ModelDelta d1 = ZeroDelta(4, 50), d2 = ZeroDelta(4, 50);
  v1::RoundMetrics a, b;
  ASSERT_THAT(resumed->Close(open->round, false, 50, d1, &a), IsOk());
  ASSERT_THAT(dp->Close(dp->Open(6, 50, 500, 5)->round, false, 50, d2, &b), IsOk());
  EXPECT_DOUBLE_EQ(a.epsilon(), b.epsilon());
  // The secure encoding carries the count coordinate and its noise scaled by C.
  auto e = dp->SecureEncoding(open->round, 4);
  ASSERT_THAT(e.status(), IsOk());
  EXPECT_TRUE(e->clipped_count);
  EXPECT_DOUBLE_EQ(e->count_noise_stddev, 0.6 * clip / 2);
  EXPECT_GT(e->noise_stddev, 0);
}

}  // namespace
}  // namespace fedge::server
