#include "server/update_bound.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "base/rng.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fedge::server {
namespace {

using ::testing::ElementsAre;

// An update of 4 coordinates, all equal, of L2 norm `norm`.
aggregation::Update Of(std::string id, double weight, double norm) {
  aggregation::Update u;
  u.client_id = std::move(id);
  u.weight = weight;
  const float v = static_cast<float>(norm / 2);
  u.tensors.push_back({"w", {4}, {v, v, v, v}, std::nullopt});
  return u;
}

double NormOf(const aggregation::Update& u) { return aggregation::L2Norm(u); }

UpdateBound::Options Adaptive(int held = 64) {
  UpdateBound::Options o;
  o.norm_multiple = 3;
  o.weight_multiple = 10;
  o.held_updates = held;
  return o;
}

// Takes every update, releases the rest at the close; returns all, by client id.
std::vector<aggregation::Update> RunRound(UpdateBound& bound,
                                          std::vector<aggregation::Update> updates) {
  std::vector<aggregation::Update> out;
  for (aggregation::Update& u : updates) {
    const double n = NormOf(u);
    for (aggregation::Update& r : bound.Take(std::move(u), n)) out.push_back(std::move(r));
  }
  for (aggregation::Update& r : bound.Release()) out.push_back(std::move(r));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.client_id < b.client_id;
  });
  return out;
}

TEST(RunningLowerMedianTest, MatchesTheSortedLowerMedian) {
  base::Rng rng(3);
  RunningLowerMedian m;
  std::vector<double> seen;
  EXPECT_EQ(m.Get(), 0.0);
  for (int i = 0; i < 200; ++i) {
    const double x = std::floor(rng.Uniform() * 50);  // with repeats
    m.Add(x);
    seen.push_back(x);
    std::vector<double> sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    ASSERT_EQ(m.Get(), sorted[(sorted.size() + 1) / 2 - 1]) << i;
  }
  EXPECT_EQ(m.count(), 200);
}

TEST(UpdateBoundTest, AnOutlierIsClippedToKTimesTheMedianNorm) {
  UpdateBound bound(Adaptive());
  auto out = RunRound(bound, {Of("a", 10, 1.0), Of("b", 10, 1.1), Of("c", 10, 0.9),
                              Of("d", 10, 1.0), Of("evil", 10, 1e30)});
  ASSERT_EQ(out.size(), 5u);
  EXPECT_NEAR(NormOf(out[0]), 1.0, 1e-6);  // the honest ones are untouched
  EXPECT_NEAR(NormOf(out[1]), 1.1, 1e-6);
  EXPECT_NEAR(NormOf(out[4]), 3.0, 1e-5);  // 3 × the lower median (1.0)
  v1::RobustnessRoundMetrics m;
  bound.Report(&m);
  EXPECT_NEAR(m.norm_bound(), 3.0, 1e-6);
  EXPECT_EQ(m.clipped(), 1);
  EXPECT_EQ(m.weight_capped(), 0);
  EXPECT_EQ(m.released_early(), 0);
  EXPECT_EQ(m.weight_cap(), 100);
}

// An attacker arriving first or last gets the same bound; with W = 2 held updates and 20
// arrivals, one that arrives first is still held (it is the largest) and bounded with the
// whole round's median.
TEST(UpdateBoundTest, ArrivalOrderDoesNotDecideTheAttackersBound) {
  std::vector<aggregation::Update> honest;
  for (int i = 0; i < 19; ++i) honest.push_back(Of("h" + std::to_string(100 + i), 5, 1 + 0.01 * i));
  for (int held : {64, 2}) {
    for (bool first : {true, false}) {
      std::vector<aggregation::Update> round = honest;
      auto evil = Of("evil", 5, 1e6);
      round.insert(first ? round.begin() : round.end(), evil);
      UpdateBound bound(Adaptive(held));
      auto out = RunRound(bound, round);
      ASSERT_EQ(out.size(), 20u);
      EXPECT_EQ(out[0].client_id, "evil");
      EXPECT_NEAR(NormOf(out[0]), 3 * 1.09, 1e-4) << held << first;  // median of 1.00 .. 1.18
      v1::RobustnessRoundMetrics m;
      bound.Report(&m);
      EXPECT_EQ(m.clipped(), 1);
      EXPECT_EQ(m.released_early(), held == 2 ? 18 : 0);
    }
  }
}

TEST(UpdateBoundTest, WeightsAreCappedByTheJobAndByTheRoundsMedian) {
  UpdateBound::Options o = Adaptive();
  o.max_weight = 1000;
  UpdateBound bound(o);
  std::vector<aggregation::Update> round = {Of("a", 10, 1), Of("b", 20, 1), Of("c", 30, 1),
                                            Of("evil", 1 << 30, 1)};
  for (aggregation::Update& u : round) bound.CapWeight(u);
  EXPECT_EQ(round[3].weight, 1000);  // the job's cap, on arrival
  auto out = RunRound(bound, round);
  EXPECT_EQ(out[3].weight, 200);     // 10 × the lower median (20)
  EXPECT_EQ(out[0].weight, 10);
  v1::RobustnessRoundMetrics m;
  bound.Report(&m);
  EXPECT_EQ(m.weight_capped(), 2);  // once each cap
  EXPECT_EQ(m.weight_cap(), 200);
}

// A sub-model holding a quarter of the coordinates is held to half the full bound.
TEST(UpdateBoundTest, ASubModelsBoundScalesWithTheCoordinatesItHeld) {
  UpdateBound bound(Adaptive());
  auto quarter = [](std::string id, float v) {
    aggregation::Update u;
    u.client_id = std::move(id);
    u.weight = 1;
    u.tensors.push_back(
        {"w", {4}, {v, 0, 0, 0}, *aggregation::CoordinateMask::FromIndices(4, {0})});
    return u;
  };
  // Full-model norms: 1, 1, 1 (a quarter update of norm 0.5 is 0.5·√4 = 1) and 20.
  auto out = RunRound(bound, {Of("a", 1, 1), Of("b", 1, 1), quarter("c", 0.5f),
                              quarter("d", 10.0f)});
  EXPECT_NEAR(NormOf(out[2]), 0.5, 1e-6);
  EXPECT_NEAR(NormOf(out[3]), 1.5, 1e-5);  // 3 × 1 × √(1/4)
}

TEST(UpdateBoundTest, AFixedBoundClipsOnArrival) {
  UpdateBound::Options o;
  o.fixed_norm = 2;
  UpdateBound bound(o);
  auto now = bound.Take(Of("a", 3, 10), 10);
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NEAR(NormOf(now[0]), 2, 1e-6);
  EXPECT_EQ(now[0].weight, 3);
  EXPECT_TRUE(bound.Release().empty());
}

TEST(UpdateBoundTest, ForJobFollowsPrivacyAndMemory) {
  v1::JobConfig job;
  job.mutable_robustness()->set_max_examples_per_update(640);
  job.mutable_robustness()->set_max_weight_multiple(10);
  job.mutable_robustness()->set_norm_bound_multiple(3);
  auto o = UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->max_weight, 640);
  EXPECT_EQ(o->norm_multiple, 3);
  EXPECT_EQ(o->held_updates, 64);
  EXPECT_EQ(UpdateBound::ForJob(job, 1 << 24, 64, int64_t{256} << 20)->held_updates, 4);
  EXPECT_EQ(UpdateBound::ForJob(job, 1 << 28, 64, int64_t{256} << 20)->held_updates, 1);
  job.mutable_privacy()->set_noise_multiplier(1);  // central DP: no data-dependent bound
  o = UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20);
  EXPECT_EQ(o->norm_multiple, 0);
  EXPECT_EQ(o->weight_multiple, 0);
  job.mutable_privacy()->set_secure_aggregation_threshold(2);
  EXPECT_FALSE(UpdateBound::ForJob(job, 1000, 64, int64_t{256} << 20).has_value());
}

}  // namespace
}  // namespace fedge::server
